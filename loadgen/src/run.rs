//! `loadgen run`: post orders, follow each to its final status, measure.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::cli::RunArgs;
use crate::cpu::{Programs, per_order, ticks_per_second};
use crate::follow::Follower;
use crate::orders::OrderMaker;
use crate::report::{Latency, Report, Second, new_histogram};
use crate::rss::{peak_rss_bytes, rss_bytes};
use crate::schedule::Schedule;
use crate::tokens::Tokens;

/// One accepted order: when it was due (open loop) or sent (closed loop), and when accepted.
struct Posted {
    id: Uuid,
    start: Instant,
    accepted: Instant,
}

struct Tally {
    posted: Vec<Posted>,
    refused: u64,
    refused_503: u64,
    unanswered: u64,
    timed_out: u64,
    refusal_latency: hdrhistogram::Histogram<u64>,
    /// Open loop: how late each order left loadgen after it was due, in microseconds.
    send_lag: hdrhistogram::Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            posted: Vec::new(),
            refused: 0,
            refused_503: 0,
            unanswered: 0,
            timed_out: 0,
            refusal_latency: new_histogram(),
            send_lag: new_histogram(),
        }
    }
}

/// A latency as the histograms record it: whole microseconds, at least one.
fn micros(latency: Duration) -> u64 {
    (latency.as_micros() as u64).max(1)
}

/// What each POST carries besides its order.
struct Posting {
    /// An `Idempotency-Key` of its own.
    keyed: bool,
    /// Its customer's bearer token (none: no `Authorization`).
    tokens: Tokens,
}

impl Posting {
    fn of(args: &RunArgs) -> anyhow::Result<Self> {
        Ok(Self {
            keyed: args.idempotency_keys,
            tokens: args.target.tokens.sign()?,
        })
    }
}

/// Posts one order, as `posting` says. `start` is when it was due (open loop, `scheduled`) or
/// sent (closed loop); a scheduled order's lateness in leaving loadgen is also counted apart.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    posting: &Posting,
    start: Instant,
    scheduled: bool,
    tally: &Mutex<Tally>,
) {
    let lag = scheduled.then(|| start.elapsed());
    let mut request = client.post(url).json(body);
    if posting.keyed {
        request = request.header("Idempotency-Key", Uuid::new_v4().to_string());
    }
    if let Some(token) = posting.tokens.of(body) {
        request = request.bearer_auth(token);
    }
    let response = request.send().await;
    let answered = Instant::now();
    let (id, status) = match response {
        Ok(response) if response.status() == 201 => (
            response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|order| order["id"].as_str().and_then(|id| id.parse().ok())),
            Some(201),
        ),
        Ok(response) => (None, Some(response.status().as_u16())),
        Err(error) => (None, error.is_timeout().then_some(0)),
    };
    let mut tally = tally.lock().await;
    if let Some(lag) = lag {
        let _ = tally.send_lag.record(micros(lag));
    }
    match (id, status) {
        (Some(id), _) => tally.posted.push(Posted {
            id,
            start,
            accepted: answered,
        }),
        (None, Some(503)) => {
            tally.refused += 1;
            tally.refused_503 += 1;
            let _ = tally.refusal_latency.record(micros(answered - start));
        }
        (None, None) => {
            tally.refused += 1;
            tally.unanswered += 1;
        }
        (None, Some(0)) => {
            tally.refused += 1;
            tally.unanswered += 1;
            tally.timed_out += 1;
        }
        (None, Some(_)) => tally.refused += 1,
    }
}

fn progress(args: &RunArgs) -> ProgressBar {
    let bar = ProgressBar::new(args.orders);
    if args.quiet || args.json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} final  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs the load described by `args` and reports.
///
/// The load comes from one thread of its own, with a single-threaded runtime (unless an open loop
/// asks for more threads): loadgen shares the cores with what it measures, and on a runtime with
/// a thread per core each order crossed threads several times (the schedule's thread, the worker
/// taking the request, the worker taking its response), at about 6.7 context switches per order
/// (BENCHMARKS.md, "Decisions, measured").
pub async fn run(args: &RunArgs) -> anyhow::Result<Report> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(load(&args))
    })
    .await?
}

/// The HTTP client of one sending thread.
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // Every connection is kept for reuse: one closed after its request leaves a port in
        // TIME_WAIT, and an open loop far above the maximum, with thousands of requests in flight,
        // would run out of local ports and fail requests in the client.
        .pool_max_idle_per_host(usize::MAX)
        // Well below the services' keep-alive (`HTTP__KEEP_ALIVE_SECONDS`, 120 s): the client
        // always closes an idle connection first, so none is reused as the server closes it.
        .pool_idle_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()
}

/// The open loop's share of one sender: orders `first`, `first + step`, ... of the schedule,
/// each sent the moment it is due, the POSTs in flight driven while it waits (a task spawned per
/// order would wait behind every other ready task of the thread before sending, which the
/// latency would count).
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    tally: &Mutex<Tally>,
    args: &RunArgs,
    posting: &Posting,
    rate: f64,
    seed: u64,
    began: Instant,
    first: u64,
    step: u64,
) -> anyhow::Result<()> {
    let mut maker = OrderMaker::new(seed, args.max_order_total, args.reject_ratio);
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut schedule = Schedule::new()?;
    let mut in_flight = FuturesUnordered::new();
    for i in (first..args.orders).step_by(step.max(1) as usize) {
        let due = began + period.mul_f64(i as f64);
        let reached = schedule.until(due);
        tokio::pin!(reached);
        loop {
            tokio::select! {
                biased;
                reached = &mut reached => {
                    reached?;
                    break;
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
        let (body, _) = maker.next_order();
        // Latency counts from when the order was due, so queueing shows.
        in_flight.push(async move { post(client, url, &body, posting, due, true, tally).await });
    }
    while in_flight.next().await.is_some() {}
    Ok(())
}

async fn load(args: &RunArgs) -> anyhow::Result<Report> {
    let follower = Follower::start(&args.target.amqp_url, &args.target.exchange).await?;
    let client = http_client()?;
    let url = format!("{}/orders", args.target.url.trim_end_matches('/'));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = progress(args);
    let programs = Programs::of(&args.target);
    // Tokens are signed before the clock starts.
    let posting = Arc::new(Posting::of(args)?);
    let cpu_before = programs.sample();
    let began = Instant::now();

    // Progress: verdicts seen, refreshed while the load runs.
    let ticker = {
        let bar = bar.clone();
        let tally = tally.clone();
        let seen = follower.seen_counter();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_position(seen.load(Ordering::Relaxed));
                let accepted = tally.lock().await.posted.len();
                bar.set_message(format!("{accepted} accepted"));
            }
        })
    };
    // Resident memory of the services, once a second, to show growth (or its absence).
    let memory = Arc::new(Mutex::new(HashMap::<u64, (Option<f64>, Option<f64>)>::new()));
    let sampler = {
        let memory = memory.clone();
        let pids = (
            args.target.order_service_pid,
            args.target.processor_service_pid.first().copied(),
        );
        tokio::spawn(async move {
            let mib =
                |pid: Option<u32>| pid.and_then(rss_bytes).map(|b| b as f64 / 1024.0 / 1024.0);
            let mut second = 0;
            loop {
                memory
                    .lock()
                    .await
                    .insert(second, (mib(pids.0), mib(pids.1)));
                tokio::time::sleep_until((began + Duration::from_secs(second + 1)).into()).await;
                second += 1;
            }
        })
    };

    let seed = fastrand::u64(..);
    match args.rate {
        None => {
            let next = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..args.concurrency.max(1))
                .map(|worker| {
                    let (client, url, tally, next, posting) = (
                        client.clone(),
                        url.clone(),
                        tally.clone(),
                        next.clone(),
                        posting.clone(),
                    );
                    let mut maker = OrderMaker::new(
                        seed ^ worker as u64,
                        args.max_order_total,
                        args.reject_ratio,
                    );
                    let total = args.orders;
                    tokio::spawn(async move {
                        while next.fetch_add(1, Ordering::Relaxed) < total {
                            let (body, _) = maker.next_order();
                            post(
                                &client,
                                &url,
                                &body,
                                &posting,
                                Instant::now(),
                                false,
                                &tally,
                            )
                            .await;
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await?;
            }
        }
        Some(rate) if args.threads <= 1 => {
            // On this runtime, with the follower: the fewest context switches per order.
            open_loop(
                &client, &url, &tally, args, &posting, rate, seed, began, 0, 1,
            )
            .await?;
        }
        Some(rate) => {
            // Threads of their own, each with its runtime and connections; this runtime keeps
            // following verdicts meanwhile.
            let step = u64::from(args.threads);
            let mut done = Vec::new();
            for first in 0..step {
                let (sent, finished) = tokio::sync::oneshot::channel();
                let (tally, url, args, posting) =
                    (tally.clone(), url.clone(), args.clone(), posting.clone());
                std::thread::Builder::new()
                    .name(format!("loadgen-send-{first}"))
                    .spawn(move || {
                        let result = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(anyhow::Error::from)
                            .and_then(|runtime| {
                                runtime.block_on(async {
                                    let client = http_client()?;
                                    open_loop(
                                        &client,
                                        &url,
                                        &tally,
                                        &args,
                                        &posting,
                                        rate,
                                        seed ^ first,
                                        began,
                                        first,
                                        step,
                                    )
                                    .await
                                })
                            });
                        let _ = sent.send(result);
                    })?;
                done.push(finished);
            }
            for finished in done {
                finished.await??;
            }
        }
    }
    let posted_all = Instant::now();

    // Wait for every accepted order's verdict, up to the deadline.
    let deadline = posted_all + Duration::from_secs(args.deadline_seconds);
    let ids: Vec<Uuid> = tally.lock().await.posted.iter().map(|p| p.id).collect();
    let mut pending: Vec<Uuid> = ids;
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in pending {
            if !follower.has(&id).await {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let cpu_after = programs.sample();
    ticker.abort();
    sampler.abort();
    let finals = follower.stop().await;
    bar.finish_and_clear();

    let tally = tally.lock().await;
    let mut post_latency = new_histogram();
    let mut end_to_end = new_histogram();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut seconds: HashMap<u64, (u64, u64, hdrhistogram::Histogram<u64>)> = HashMap::new();
    let mut last_final = began;
    let mut last_accepted = began;
    let mut not_final = 0;
    for posted in &tally.posted {
        let _ = post_latency.record(micros(posted.accepted - posted.start));
        last_accepted = last_accepted.max(posted.accepted);
        let second = (posted.accepted - began).as_secs();
        seconds
            .entry(second)
            .or_insert_with(|| (0, 0, new_histogram()))
            .0 += 1;
        match finals.get(&posted.id) {
            Some((at, status)) => {
                let latency = at.saturating_duration_since(posted.start);
                let _ = end_to_end.record(micros(latency));
                *statuses.entry(status.as_str().to_owned()).or_default() += 1;
                last_final = last_final.max(*at);
                let entry = seconds
                    .entry(at.saturating_duration_since(began).as_secs())
                    .or_insert_with(|| (0, 0, new_histogram()));
                entry.1 += 1;
                let _ = entry.2.record(micros(latency));
            }
            None => not_final += 1,
        }
    }
    let span = |end: Instant| (end - began).as_secs_f64().max(1e-9);
    let accepted = tally.posted.len() as u64;
    let final_count = accepted - not_final;
    let mut timeline: Vec<Second> = seconds
        .into_iter()
        .map(|(second, (accepted, finals, histogram))| {
            let latency = Latency::of(&histogram);
            Second {
                second,
                accepted,
                finals,
                end_to_end_p50_ms: latency.p50_ms,
                end_to_end_p99_ms: latency.p99_ms,
                ..Second::default()
            }
        })
        .collect();
    let memory = memory.lock().await;
    for second in &mut timeline {
        if let Some((order, processor)) = memory.get(&second.second) {
            second.rss_order_service_mib = *order;
            second.rss_processor_service_mib = *processor;
        }
    }
    timeline.sort_by_key(|s| s.second);
    let mib = |pid: Option<u32>| {
        pid.and_then(peak_rss_bytes)
            .map(|b| b as f64 / 1024.0 / 1024.0)
    };
    Ok(Report {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_owned(),
        concurrency: args.rate.is_none().then_some(args.concurrency),
        rate: args.rate,
        requested: args.orders,
        accepted,
        refused: tally.refused,
        refused_503: tally.refused_503,
        unanswered: tally.unanswered,
        timed_out: tally.timed_out,
        refusal_latency: Latency::of(&tally.refusal_latency),
        duration_s: span(last_final.max(last_accepted)),
        accepted_per_s: accepted as f64 / span(last_accepted),
        final_per_s: final_count as f64 / span(last_final),
        post_latency: Latency::of(&post_latency),
        send_lag: args.rate.is_some().then(|| Latency::of(&tally.send_lag)),
        end_to_end_latency: Latency::of(&end_to_end),
        statuses,
        not_final,
        peak_rss_order_service_mib: mib(args.target.order_service_pid),
        peak_rss_processor_service_mib: mib(args.target.processor_service_pid.first().copied()),
        cpu: per_order(&cpu_before, &cpu_after, final_count, ticks_per_second()),
        timeline,
    })
}
