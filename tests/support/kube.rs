//! A stateful stand-in for the Kubernetes API, for tests that run the real controller: the
//! Python server of `tests/kube/standin.py` (built on kmock; `scripts/setup` installs it) on a
//! free loopback port, over plain HTTP with no authentication.
//!
//! ```ignore
//! let kube = KubeStandin::start();
//! let client = kube.client().await;                      // for the test's own requests
//! let kubeconfig = kube.kubeconfig(dir.path());         // for the binary: KUBECONFIG=...
//! ```
//!
//! The server is stopped when the `KubeStandin` is dropped, also when the test panics; it also
//! exits by itself when the test process dies (it watches its standard input). What it logged
//! (one line a request, and its errors) is printed when the test panics.
//!
//! A test can also do to the clients what a real cluster does: [`KubeStandin::pause_watches`] and
//! [`KubeStandin::expire`] (compaction: every watch must relist after a 410 Gone),
//! [`KubeStandin::forbid`] (RBAC answering 403 for a while after an API server restart).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The User-Agent of [`KubeStandin::client`], the tests' own requests.
pub const TEST_USER_AGENT: &str = "poolwarden-tests";
/// How long the server may take to print `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The exit code of `standin.py` when a Python package is missing.
const EXIT_MISSING_PACKAGES: i32 = 3;
/// How many lines of the server's log a panicking test shows.
const LOG_TAIL_LINES: usize = 60;

/// A running stand-in API server. Dropping it stops the server.
pub struct KubeStandin {
    child: Child,
    // Held open for the server's `--watch-stdin`: it exits when this closes.
    stdin: Option<ChildStdin>,
    url: String,
    log: tempfile::NamedTempFile,
}

impl KubeStandin {
    /// Starts the server on a free port and waits until it listens. Panics with a message that
    /// says to run `scripts/setup` when `python3` or the Python packages are missing.
    pub fn start() -> KubeStandin {
        Self::start_with(&[])
    }

    /// [`KubeStandin::start`], with more arguments for `standin.py`, e.g. `--no-streaming-lists`.
    pub fn start_with(args: &[&str]) -> KubeStandin {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/standin.py");
        let log = tempfile::Builder::new()
            .prefix("kube-standin-")
            .suffix(".log")
            .tempfile()
            .expect("a temporary file for the stand-in's log");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0", "--watch-stdin"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("the stand-in's log reopens"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 for the Kubernetes stand-in ({e}): run scripts/setup")
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("the stand-in's stdout is piped");

        // Read the `ready URL` line on a thread, so that a server that hangs cannot hang the test.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let url = line
            .trim()
            .strip_prefix("ready ")
            .map(str::to_owned)
            .filter(|url| url.starts_with("http://"));

        let mut standin = KubeStandin {
            child,
            stdin,
            url: url.clone().unwrap_or_default(),
            log,
        };
        if url.is_none() {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut code = None;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = standin.child.try_wait() {
                    code = status.code();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = standin.log_text();
            drop(standin); // before panicking, or its Drop would print the log a second time
            if code == Some(EXIT_MISSING_PACKAGES) || log.contains("ModuleNotFoundError") {
                panic!(
                    "the Kubernetes stand-in lacks its Python packages: run scripts/setup \
                     (it installs tests/kube/requirements.txt)\n{log}"
                );
            }
            panic!(
                "the Kubernetes stand-in did not start (exit code {code:?}, printed {line:?}); \
                 if Python packages are missing, run scripts/setup\n{log}"
            );
        }
        standin
    }

    /// The server's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Writes `dir/kubeconfig` pointing at the server (plain HTTP, no credentials, namespace
    /// `default`) and returns its path, for `KUBECONFIG`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: standin\n  \
               cluster:\n    \
                 server: {url}\n\
             users:\n\
             - name: standin\n  \
               user: {{}}\n\
             contexts:\n\
             - name: standin\n  \
               context:\n    \
                 cluster: standin\n    \
                 user: standin\n    \
                 namespace: default\n\
             current-context: standin\n",
            url = self.url
        );
        std::fs::write(&path, text).expect("the kubeconfig is written");
        path
    }

    /// A client of the server, with `default` as its default namespace and
    /// [`TEST_USER_AGENT`] as its User-Agent (the stand-in tells its requests from the binary's).
    pub async fn client(&self) -> ::kube::Client {
        ::kube::Client::try_from(self.config()).expect("a client of the stand-in")
    }

    /// [`KubeStandin::client`], without kube's own retries of 429, 503 and 504: for a test that
    /// wants those answers as they come (an eviction a budget refuses).
    pub async fn client_without_retries(&self) -> ::kube::Client {
        let mut config = self.config();
        config.default_retry = false;
        ::kube::Client::try_from(config).expect("a client of the stand-in")
    }

    fn config(&self) -> ::kube::Config {
        let uri = self.url.parse().expect("the stand-in's URL parses");
        let mut config = ::kube::Config::new(uri);
        config.default_namespace = "default".into();
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(TEST_USER_AGENT),
        ));
        config
    }

    /// Open watches hold their events back (until [`KubeStandin::expire`]): what changes from now
    /// on, the clients do not hear of by watching.
    pub fn pause_watches(&self) {
        self.admin("pause-watches");
    }

    /// Compaction, as after an API server restart: every open watch ends, the events held back
    /// are lost, and every watch or continue token from before answers 410 Gone.
    pub fn expire(&self) {
        self.admin("expire");
    }

    /// Every API request is answered 403 Forbidden for `seconds`.
    pub fn forbid(&self, seconds: u32) {
        self.admin(&format!("forbid?seconds={seconds}"));
    }

    /// The endpoint of Service `namespace/name` listens at `address` (`host:port`); `None`: it
    /// has no endpoint (its pod is gone). How the stand-in reaches an admission webhook.
    pub fn endpoints(&self, service: &str, address: Option<&str>) {
        self.admin(&format!(
            "endpoints?service={service}&address={}",
            address.unwrap_or_default()
        ));
    }

    /// How many API requests came with each User-Agent so far (`""`: none), as an API server's
    /// audit log tells its clients apart.
    pub fn user_agents(&self) -> BTreeMap<String, u64> {
        let answer = self.admin("user-agents");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let parsed: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
        serde_json::from_value(parsed["userAgents"].clone()).expect("counts by User-Agent")
    }

    /// POSTs to `/standin/{what}`; the whole answer, headers and body.
    fn admin(&self, what: &str) -> String {
        let address = self.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).expect("the stand-in listens");
        write!(
            stream,
            "POST /standin/{what} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("the request is sent");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("the stand-in answers");
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "POST /standin/{what}: {answer}"
        );
        answer
    }

    /// What the server has logged so far: one line a request, then errors and tracebacks.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log.path()) {
            let _ = file.seek(SeekFrom::Start(0));
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        drop(self.stdin.take());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "--- the Kubernetes stand-in's log (last {} lines) ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}
