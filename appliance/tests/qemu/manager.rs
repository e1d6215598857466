//! A stand-in for the manager API calls the appliance makes (`POST /api/v1/reports` with
//! idempotency keys, heartbeat, job claims and completions), on a loopback port, recording what
//! it received. Requests without the test token get 401.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::TOKEN;

/// A report as the test manager received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The idempotency key.
    pub key: String,
    /// The report.
    pub report: serde_json::Value,
}

#[derive(Debug, Default)]
struct ManagerState {
    reports: Vec<Received>,
    ids: HashMap<String, i64>,
    posts: usize,
    heartbeats: usize,
    jobs: Vec<(i64, String)>,
    completed: Vec<(i64, serde_json::Value)>,
}

/// The manager API calls the appliance makes, answered on a loopback port.
#[derive(Debug, Clone)]
pub struct TestManager {
    /// Its port.
    pub port: u16,
    state: Arc<Mutex<ManagerState>>,
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl TestManager {
    /// Listens on `port` (0: any free port).
    pub fn start(port: u16) -> TestManager {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ManagerState::default()));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || Self::serve(stream, &s));
            }
        });
        TestManager { port, state }
    }

    /// A free loopback port (for a manager that starts later).
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn serve(mut stream: TcpStream, state: &Mutex<ManagerState>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
            return respond(&mut stream, "401 Unauthorized", r#"{"error":"token"}"#);
        }
        let mut st = state.lock().unwrap();
        match (method.as_str(), path.as_str()) {
            ("POST", "/api/v1/reports") => {
                st.posts += 1;
                let Some(key) = headers.get("idempotency-key").cloned() else {
                    return respond(&mut stream, "400 Bad Request", r#"{"error":"key"}"#);
                };
                if let Some(id) = st.ids.get(&key) {
                    let id = *id;
                    return respond(&mut stream, "200 OK", &format!(r#"{{"id":{id}}}"#));
                }
                let report: serde_json::Value = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(_) => return respond(&mut stream, "400 Bad Request", r#"{"error":"json"}"#),
                };
                let id = st.reports.len() as i64 + 1;
                st.ids.insert(key.clone(), id);
                st.reports.push(Received { key, report });
                respond(&mut stream, "201 Created", &format!(r#"{{"id":{id}}}"#));
            }
            ("POST", "/api/v1/heartbeat") => {
                st.heartbeats += 1;
                respond(&mut stream, "204 No Content", "");
            }
            ("POST", "/api/v1/jobs/claim") => match st.jobs.pop() {
                Some((id, target)) => respond(
                    &mut stream,
                    "200 OK",
                    &serde_json::json!({"id": id, "target": target, "lease_expires": "2100-01-01T00:00:00Z"}).to_string(),
                ),
                None => respond(&mut stream, "204 No Content", ""),
            },
            ("POST", p) if p.starts_with("/api/v1/jobs/") && p.ends_with("/complete") => {
                let id = p["/api/v1/jobs/".len()..p.len() - "/complete".len()].parse().unwrap_or(-1);
                st.completed.push((id, serde_json::from_slice(&body).unwrap_or_default()));
                respond(&mut stream, "204 No Content", "");
            }
            _ => respond(&mut stream, "404 Not Found", r#"{"error":"route"}"#),
        }
    }

    /// Reports stored so far.
    pub fn reports(&self) -> Vec<Received> {
        self.state.lock().unwrap().reports.clone()
    }

    /// POSTs of reports received (including repeats of a key).
    pub fn posts(&self) -> usize {
        self.state.lock().unwrap().posts
    }

    /// Heartbeats received.
    pub fn heartbeats(&self) -> usize {
        self.state.lock().unwrap().heartbeats
    }

    /// Enqueues a job.
    pub fn add_job(&self, id: i64, target: &str) {
        self.state
            .lock()
            .unwrap()
            .jobs
            .push((id, target.to_string()));
    }

    /// Jobs completed: id and body.
    pub fn completed(&self) -> Vec<(i64, serde_json::Value)> {
        self.state.lock().unwrap().completed.clone()
    }
}
