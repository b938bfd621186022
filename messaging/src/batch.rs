//! Group commit: concurrent callers hand their writes to one writer task, which writes whatever
//! is waiting (up to a maximum) with one statement, one round trip and one commit, and tells each
//! caller how it went. Nothing waits for a batch to fill: a lone write goes at once, unless the
//! writer is told to linger (`Grouping::linger`), and then for that long at most from the moment
//! the oldest waiting write was handed over.
//!
//! Rows of one statement must have distinct keys (PostgreSQL refuses `ON CONFLICT DO UPDATE` or
//! `UPDATE ... FROM` touching a row twice): a repeated key goes into the next statement.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use sea_orm::DbErr;

use crate::failure::Classify;
use crate::trace::Batch;
use std::time::Duration;
use tracing::Instrument;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

/// Writes a group of requests, answering each, in order.
pub trait GroupWrite: Send + Sync + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    type Key: Ord + Hash + Send;

    /// What a statement does, for its span (`insert orders`, `record deliveries`).
    const NAME: &'static str;

    fn key(request: &Self::Request) -> Self::Key;

    /// One statement for all of `requests` (distinct keys); the answers in the same order.
    fn write(
        &self,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Self::Response>, DbErr>> + Send;
}

/// The answers of a statement that returns one row per key, put back in the order of `requests`
/// (SQL returns rows in no particular order).
pub fn in_request_order<W: GroupWrite>(
    requests: &[W::Request],
    mut answers: HashMap<W::Key, W::Response>,
) -> Result<Vec<W::Response>, DbErr> {
    requests
        .iter()
        .map(|request| {
            answers
                .remove(&W::key(request))
                .ok_or_else(|| DbErr::Custom("the statement returned no row for a request".into()))
        })
        .collect()
}

/// One field of every request, as one array parameter of a group statement
/// (`unnest($1::uuid[], ...)`): the same SQL text whatever the group size.
pub fn column<'a, R, T>(requests: &'a [R], field: impl Fn(&'a R) -> T) -> Vec<T> {
    requests.iter().map(field).collect()
}

struct Pending<W: GroupWrite> {
    request: W::Request,
    /// When the request was handed over (the linger counts from the oldest).
    since: Instant,
    /// The caller's span, linked with the statement's.
    span: tracing::Span,
    done: oneshot::Sender<Result<W::Response, DbErr>>,
}

impl<W: GroupWrite> Pending<W> {
    fn new(request: W::Request, done: oneshot::Sender<Result<W::Response, DbErr>>) -> Self {
        Self {
            request,
            since: Instant::now(),
            span: tracing::Span::current(),
            done,
        }
    }
}

/// The handle callers use; cheap to clone. The writer task stops when the last one is dropped.
pub struct GroupWriter<W: GroupWrite> {
    sender: mpsc::Sender<Pending<W>>,
}

impl<W: GroupWrite> Clone for GroupWriter<W> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

/// The writer's queue is full: the caller should refuse (shed) the request rather than wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many writes waiting")]
pub struct Busy;

/// How a [`GroupWriter`] groups its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// Requests written by one statement at most.
    pub max_group: usize,
    /// Statements in flight at once. With more than one, a request never waits for a statement
    /// in flight while a writer is free.
    pub parallel: usize,
    /// Requests waiting at most besides the statements in flight: beyond,
    /// [`GroupWriter::write`] waits for room and [`GroupWriter::try_write`] refuses.
    pub queue: usize,
    /// How long the oldest waiting request may wait for others to join its statement. Zero: a
    /// lone request goes at once. A request that already waited that long for a statement in
    /// flight waits no longer, so under load this adds nothing; at moderate load it trades up to
    /// `linger` of latency for fewer, larger statements (BENCHMARKS.md).
    pub linger: Duration,
}

impl Grouping {
    /// Groups of up to `max_group` requests, `parallel` statements in flight, four groups' worth
    /// of requests waiting, no linger.
    pub fn new(max_group: usize, parallel: usize) -> Self {
        Self {
            max_group: max_group.max(1),
            parallel: parallel.max(1),
            queue: 4 * max_group.max(1),
            linger: Duration::ZERO,
        }
    }

    pub fn queue(self, queue: usize) -> Self {
        Self {
            queue: queue.max(1),
            ..self
        }
    }

    pub fn linger(self, linger: Duration) -> Self {
        Self { linger, ..self }
    }
}

impl<W: GroupWrite> GroupWriter<W> {
    /// Starts the writer tasks.
    pub fn start(writer: W, grouping: Grouping) -> Self {
        let (sender, receiver) = mpsc::channel(grouping.queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let writer = Arc::new(writer);
        for _ in 0..grouping.parallel.max(1) {
            tokio::spawn(run(writer.clone(), receiver.clone(), grouping));
        }
        Self { sender }
    }

    /// Writes `request` with whatever else is waiting.
    pub async fn write(&self, request: W::Request) -> Result<W::Response, DbErr> {
        let (done, answer) = oneshot::channel();
        let stopped = || DbErr::Custom("the group writer has stopped".into());
        self.sender
            .send(Pending::new(request, done))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Like [`GroupWriter::write`], but refuses at once with [`Busy`] when the queue is full,
    /// instead of waiting for room (load shedding: the caller answers "retry later").
    pub fn try_write(
        &self,
        request: W::Request,
    ) -> Result<impl Future<Output = Result<W::Response, DbErr>> + use<W>, Busy> {
        let (done, answer) = oneshot::channel();
        let stopped = || DbErr::Custom("the group writer has stopped".into());
        let queued = match self.sender.try_send(Pending::new(request, done)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopped()),
        };
        Ok(async move {
            queued?;
            answer.await.map_err(|_| stopped())?
        })
    }
}

async fn run<W: GroupWrite>(
    writer: Arc<W>,
    receiver: Arc<Mutex<mpsc::Receiver<Pending<W>>>>,
    grouping: Grouping,
) {
    let Grouping {
        max_group, linger, ..
    } = grouping;
    let mut waiting: Vec<Pending<W>> = Vec::with_capacity(max_group);
    // One writer at a time takes what is waiting; the others write meanwhile.
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut waiting, max_group).await == 0 {
                break;
            }
            // Linger: let others join the oldest request's statement until its deadline.
            if let Some(oldest) = waiting.first().filter(|_| !linger.is_zero()) {
                let deadline = oldest.since + linger;
                while waiting.len() < max_group {
                    let room = max_group - waiting.len();
                    let more = receiver.recv_many(&mut waiting, room);
                    match tokio::time::timeout_at(deadline, more).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
        while !waiting.is_empty() {
            // This statement: the first request of each key; repeats wait for the next one.
            let mut keys = HashSet::new();
            let (mut group, rest): (Vec<_>, Vec<_>) = waiting
                .drain(..)
                .partition(|pending| keys.insert(W::key(&pending.request)));
            waiting = rest;
            // Rows locked in key order: concurrent statements cannot deadlock on each other.
            group.sort_by_key(|pending| W::key(&pending.request));
            write_group(&*writer, group).await;
        }
    }
}

/// The span of one statement: a trace of its own, linked from the span of each caller it serves.
fn group_span<W: GroupWrite>(group: &[Pending<W>]) -> tracing::Span {
    let batch = Batch::new(tracing::info_span!(
        parent: None,
        "group write",
        otel.name = W::NAME,
        requests = group.len(),
    ));
    for pending in group {
        batch.link(&pending.span);
    }
    batch.span().clone()
}

async fn write_group<W: GroupWrite>(writer: &W, group: Vec<Pending<W>>) {
    let span = group_span(&group);
    let (requests, answers): (Vec<_>, Vec<_>) =
        group.into_iter().map(|p| (p.request, p.done)).unzip();
    write_requests(writer, requests, answers)
        .instrument(span)
        .await;
}

async fn write_requests<W: GroupWrite>(
    writer: &W,
    requests: Vec<W::Request>,
    answers: Vec<oneshot::Sender<Result<W::Response, DbErr>>>,
) {
    match writer.write(&requests).await {
        Ok(responses) if responses.len() == requests.len() => {
            for (done, response) in answers.into_iter().zip(responses) {
                let _ = done.send(Ok(response));
            }
        }
        Ok(responses) => {
            let error = DbErr::Custom(format!(
                "a group write answered {} of {} requests",
                responses.len(),
                requests.len()
            ));
            for done in answers {
                let _ = done.send(Err(error.clone()));
            }
        }
        Err(error) if requests.len() > 1 && !error.class().is_infrastructure() => {
            // One bad request must not fail the others: each alone. (Not when the database is
            // unreachable: that fails them all alike, and each retry would wait again.)
            tracing::warn!(%error, requests = requests.len(), "group write failed; writing each alone");
            for (request, done) in requests.into_iter().zip(answers) {
                let result =
                    writer
                        .write(std::slice::from_ref(&request))
                        .await
                        .and_then(|mut responses| {
                            responses
                                .pop()
                                .ok_or_else(|| DbErr::Custom("no answer".into()))
                        });
                let _ = done.send(result);
            }
        }
        Err(error) => {
            for done in answers {
                let _ = done.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the groups it is given; fails any group holding the request 13.
    struct Recorder(Arc<Mutex<Vec<Vec<u32>>>>);

    impl GroupWrite for Recorder {
        type Request = u32;
        type Response = u32;
        type Key = u32;
        const NAME: &'static str = "test";

        fn key(request: &u32) -> u32 {
            *request % 100
        }

        async fn write(&self, requests: &[u32]) -> Result<Vec<u32>, DbErr> {
            self.0.lock().unwrap().push(requests.to_vec());
            if requests.contains(&13) {
                return Err(DbErr::Custom("unlucky".into()));
            }
            Ok(requests.iter().map(|r| r * 2).collect())
        }
    }

    /// Holds every statement until the test lets it go.
    struct Gate(Arc<tokio::sync::Semaphore>);

    impl GroupWrite for Gate {
        type Request = u32;
        type Response = u32;
        type Key = u32;
        const NAME: &'static str = "test";

        fn key(request: &u32) -> u32 {
            *request
        }

        async fn write(&self, requests: &[u32]) -> Result<Vec<u32>, DbErr> {
            let _pass = self
                .0
                .acquire()
                .await
                .map_err(|_| DbErr::Custom("closed".into()))?;
            Ok(requests.to_vec())
        }
    }

    #[tokio::test]
    async fn try_write_refuses_when_the_queue_is_full_and_writes_what_it_accepted() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let writer = GroupWriter::start(Gate(gate.clone()), Grouping::new(8, 1).queue(2));
        // The first request is taken by the writer, whose statement waits at the gate...
        let first = tokio::spawn(writer.try_write(1).unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while writer.sender.capacity() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the writer did not take the first request"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // ...two more fill the queue, the next is refused.
        let second = writer.try_write(2).unwrap();
        let third = writer.try_write(3).unwrap();
        assert_eq!(writer.try_write(4).err(), Some(Busy));

        gate.add_permits(10);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap(), 2);
        assert_eq!(third.await.unwrap(), 3);
        // Room again.
        let fifth = writer.try_write(5).unwrap();
        assert_eq!(fifth.await.unwrap(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_writer_lets_later_writes_join_until_the_oldest_waited_long_enough() {
        let groups = Arc::new(Mutex::new(Vec::new()));
        let linger = Duration::from_millis(50);
        let writer =
            GroupWriter::start(Recorder(groups.clone()), Grouping::new(8, 1).linger(linger));
        // The clock is paused: it moves only when every task waits, straight to the next timer.
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(1).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(2).await }
        });
        assert_eq!(first.await.unwrap().unwrap(), 2);
        assert_eq!(second.await.unwrap().unwrap(), 4);
        // Later than the first one's linger: a statement of its own.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(writer.write(3).await.unwrap(), 6);
        assert_eq!(*groups.lock().unwrap(), vec![vec![1, 2], vec![3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_waited_for_a_statement_in_flight_do_not_linger_again() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let linger = Duration::from_millis(50);
        let writer = GroupWriter::start(Gate(gate.clone()), Grouping::new(8, 1).linger(linger));
        // The first statement waits at the gate for longer than the linger...
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(1).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(2).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...so when it is let go, the second write, which waited meanwhile, goes at once.
        let released = Instant::now();
        gate.add_permits(10);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert!(
            released.elapsed() < linger,
            "the second write lingered again: {:?}",
            released.elapsed()
        );
    }

    #[tokio::test]
    async fn concurrent_writes_share_statements_with_distinct_keys_and_failures_stay_alone() {
        let groups = Arc::new(Mutex::new(Vec::new()));
        let writer = GroupWriter::start(Recorder(groups.clone()), Grouping::new(8, 2));
        let requests = [1u32, 2, 101, 13, 3, 4, 5, 6, 7, 8, 9, 10];
        let answers =
            futures_util::future::join_all(requests.iter().map(|r| writer.write(*r))).await;
        for (request, answer) in requests.iter().zip(answers) {
            match request {
                13 => assert!(answer.is_err()),
                r => assert_eq!(answer.unwrap(), r * 2),
            }
        }
        let groups = groups.lock().unwrap();
        assert!(groups.iter().all(|g| g.len() <= 8));
        for group in groups.iter() {
            let keys: HashSet<u32> = group.iter().map(|r| r % 100).collect();
            assert_eq!(
                keys.len(),
                group.len(),
                "distinct keys per statement: {group:?}"
            );
        }
        assert!(
            groups.iter().any(|g| g.len() > 1),
            "writes were grouped: {groups:?}"
        );
    }
}
