//! A Server-Sent Events client for tests: reads events off a streaming response as an
//! `EventSource` would, keeping the last event id.

use std::time::Duration;

/// One event: its `id` (if it had one), its type (`message` by default) and its data.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// The id of the last event read that had one, as an `EventSource` keeps it.
    pub last_event_id: Option<String>,
}

impl EventStream {
    /// Sends `request` (with `Last-Event-ID` when given) and checks that it answers a stream.
    pub async fn open(request: reqwest::RequestBuilder, last_event_id: Option<&str>) -> Self {
        let request = match last_event_id {
            Some(id) => request.header("Last-Event-ID", id),
            None => request,
        };
        let response = request.send().await.expect("open the event stream");
        assert_eq!(response.status(), 200, "an event stream");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        Self {
            response,
            buffer: String::new(),
            last_event_id: last_event_id.map(str::to_owned),
        }
    }

    /// The next event with data (comments and bare `retry` fields are skipped); panics after
    /// `deadline` or if the stream ends.
    pub async fn next(&mut self, deadline: Duration) -> Event {
        tokio::time::timeout(deadline, self.read())
            .await
            .unwrap_or_else(|_| panic!("no event within {deadline:?}"))
            .unwrap_or_else(|| panic!("the stream ended; unread: {:?}", self.buffer))
    }

    /// The next event, or `None` if the stream ends first.
    pub async fn read(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
            }
            let chunk = self.response.chunk().await.expect("read the stream")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    /// The data of the next `status` event, as JSON.
    pub async fn next_status(&mut self, deadline: Duration) -> serde_json::Value {
        loop {
            let event = self.next(deadline).await;
            if event.event == "status" {
                return serde_json::from_str(&event.data).expect("JSON data");
            }
        }
    }

    fn parse(&mut self, block: &str) -> Option<Event> {
        let mut id = None;
        let mut event = "message".to_owned();
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = value.to_owned(),
                "data" => data.push(value),
                _ => {}
            }
        }
        if let Some(id) = &id {
            self.last_event_id = Some(id.clone());
        }
        (!data.is_empty()).then(|| Event {
            id,
            event,
            data: data.join("\n"),
        })
    }
}
