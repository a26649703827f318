//! Scale-out: three `r2 serve` replicas behind HAProxy (roundrobin, health checks on `/readyz`)
//! under a bounded load of multi-turn chat conversations; one replica is stopped with SIGTERM
//! (drain) mid-run and another killed with SIGKILL later.
//!
//! Asserted: no request fails across the SIGTERM (the requests in flight on the draining
//! replica are answered by it, new ones go elsewhere) nor anywhere else, except requests in
//! flight on the killed replica at the instant of SIGKILL, which are counted apart and bounded by
//! the number that was in flight; every turn of a conversation is answered by the same pool model
//! whichever replica served it (`r2 serve` routes a conversation on its first user message),
//! and the conversations span several pool models and replicas; HAProxy's health checks mark the
//! killed replica DOWN, after which every request succeeds.
//!
//! Needs HAProxy: `$R2_HAPROXY`, else `/usr/sbin/haproxy`; missing, the test is skipped (fails
//! with `R2_REQUIRE_TOOLS=1`, as in CI). `tools/scale-out.sh` runs it with its report printed;
//! `R2_SCALE_CONVERSATIONS`, `R2_SCALE_CLIENTS`, `R2_SCALE_RETRY_ON` and `R2_SCALE_OUT_DIR` (keep
//! the HAProxy config and logs there) change the run.

mod gateway;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::{quantile, sigterm, Guard, Lines, Provider, Serve};
use serde_json::{json, Value};

/// The replicas, as HAProxy names them and as their provider bases are tagged.
const REPLICAS: [&str; 3] = ["r1", "r2", "r3"];
/// Stopped with SIGTERM mid-run.
const DRAINED: &str = "r1";
/// Killed with SIGKILL later.
const KILLED: &str = "r2";
/// Turns per conversation.
const TURNS: usize = 3;
/// Conversations after the killed replica is DOWN.
const AFTER_DOWN: usize = 10;

/// HAProxy's `retry-on` unless `$R2_SCALE_RETRY_ON` says otherwise.
const RETRY_ON: &str = "conn-failure empty-response";

/// The HAProxy configuration: see the comments in it and README's "Scale-out test".
fn haproxy_config(
    port: u16,
    socket: &Path,
    servers: &[(&str, SocketAddr)],
    retry_on: &str,
) -> String {
    let mut config = format!(
        "global
    # The request log on stderr (the test reads retries from it), the stats socket for `show stat`.
    log stderr format raw local0 info
    stats socket {socket} mode 600 level admin
    maxconn 2000

defaults
    mode http
    log global
    log-format \"r2log server=%s status=%ST retries=%rc total_ms=%Tt\"
    # Loopback: a connection either succeeds or is refused at once; 500 ms is generous.
    timeout connect 500ms
    timeout client 30s
    timeout server 30s
    timeout check 2s
    # A request that could not be delivered is tried again up to 3 times, each time on another
    # server (redispatch on every retry; no turn-around delay when the server changes):
    # conn-failure covers a replica that stopped listening (drain) or died; empty-response covers
    # a connection closed without an answer: a kept-alive server connection closed by a draining
    # replica as the request was sent, or a replica killed with the request in flight. The
    # requests are small enough to be buffered whole, as retries need.
    retries 3
    option redispatch 1
    retry-on {retry_on}

frontend gateway
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    # Ready means the replica answers and its embedding backend embeds (no key needed).
    option httpchk GET /readyz
    http-check expect status 200
    # Which replica answered, for the test.
    http-response set-header x-r2-replica %s
    # A check every 100 ms; 2 failures mark a server DOWN, 2 successes UP again.
    default-server check inter 100ms fastinter 100ms downinter 100ms fall 2 rise 2
",
        socket = socket.display()
    );
    for (name, addr) in servers {
        config.push_str(&format!("    server {name} {addr}\n"));
    }
    config
}

/// HAProxy on a free port of 127.0.0.1, killed on drop.
struct Haproxy {
    process: Guard,
    addr: SocketAddr,
    socket: PathBuf,
    log: Lines,
}

impl Haproxy {
    /// Starts HAProxy in front of `servers` with its config in `dir`; returns once its stats
    /// socket answers. The port is picked by binding port 0 and letting it go, so another process
    /// may take it meanwhile: then HAProxy cannot bind and is started again on another port.
    fn start(binary: &Path, dir: &Path, servers: &[(&str, SocketAddr)], retry_on: &str) -> Self {
        let socket = dir.join("haproxy.sock");
        let config_path = dir.join("haproxy.cfg");
        let mut last_log = Vec::new();
        for _attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port on 127.0.0.1")
                .port();
            let _ = std::fs::remove_file(&socket);
            std::fs::write(
                &config_path,
                haproxy_config(port, &socket, servers, retry_on),
            )
            .unwrap();
            let check = Command::new(binary)
                .args(["-c", "-q", "-f"])
                .arg(&config_path)
                .output()
                .expect("haproxy runs");
            assert!(
                check.status.success(),
                "haproxy refuses the generated config {}: {}",
                config_path.display(),
                String::from_utf8_lossy(&check.stderr)
            );
            let mut child = Command::new(binary)
                .arg("-db")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("haproxy starts");
            let log = Lines::collect(child.stderr.take().unwrap());
            let mut process = Guard(child);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if UnixStream::connect(&socket).is_ok() {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    return Self {
                        process,
                        addr,
                        socket,
                        log,
                    };
                }
                if process.wait_for(Duration::from_millis(10)).is_some() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            last_log = log.all();
            let bind_failed = last_log.iter().any(|l| l.contains("cannot bind"));
            assert!(
                bind_failed,
                "haproxy did not start within 10 s:\n{}",
                last_log.join("\n")
            );
        }
        panic!(
            "haproxy could not bind a free port in 3 attempts:\n{}",
            last_log.join("\n")
        );
    }

    /// `show stat` on the stats socket: one map (column → value) per proxy and server.
    fn stat(&self) -> Vec<HashMap<String, String>> {
        let mut stream = UnixStream::connect(&self.socket).expect("the stats socket answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(b"show stat\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("not `show stat` output: {text}"))
            .split(',')
            .map(str::to_owned)
            .collect();
        lines
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                header
                    .iter()
                    .cloned()
                    .zip(line.split(',').map(str::to_owned))
                    .collect()
            })
            .collect()
    }

    /// The health status of server `name` of the backend (`UP`, `DOWN`, `UP 1/2`, ...).
    fn status(&self, name: &str) -> String {
        self.stat()
            .into_iter()
            .find(|row| row["pxname"] == "replicas" && row["svname"] == name)
            .unwrap_or_else(|| panic!("no server {name} in show stat"))["status"]
            .clone()
    }

    /// Waits at most `timeout` for server `name` to have status `want`.
    fn wait_status(&self, name: &str, want: &str, timeout: Duration) {
        let started = Instant::now();
        loop {
            let status = self.status(name);
            if status == want {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "HAProxy's server {name} is {status:?}, not {want:?}, after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What one chat request got.
#[derive(Debug, Clone)]
struct Outcome {
    conversation: usize,
    turn: usize,
    started: Instant,
    latency: Duration,
    answer: Result<Answer, String>,
}

#[derive(Debug, Clone)]
struct Answer {
    /// The pool model, from the body's `model`.
    model: String,
    /// The replica HAProxy sent it to.
    replica: String,
    /// The assistant message, for the next turn.
    content: String,
}

/// The user message of turn `turn` (1-based) of conversation `conversation`: different first
/// messages for different conversations, different later ones within a conversation.
fn user_text(conversation: usize, turn: usize) -> String {
    if turn == 1 {
        format!("Conversation {conversation}: I need help with problem number {conversation}.")
    } else {
        format!("Turn {turn} of conversation {conversation}: go on, explain step {turn} in detail.")
    }
}

/// Sends one chat request through HAProxy and checks the answer is whole and consistent:
/// `x-r2-model` = `model`, the content is the provider's for that model's provider id, usage is
/// there. Anything else is an error (the text says what).
async fn chat(
    client: &reqwest::Client,
    url: &str,
    messages: &[Value],
    provider_ids: &HashMap<String, String>,
) -> Result<Answer, String> {
    let body = json!({"model": "r2-router", "messages": messages});
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("transport: {}", error_chain(&e)))?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (header_model, replica) = (header("x-r2-model"), header("x-r2-replica"));
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status} from {replica:?}: {text}"));
    }
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let model = answer["model"].as_str().unwrap_or_default().to_owned();
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = provider_ids
        .get(&model)
        .ok_or_else(|| format!("not a pool model: {text}"))?;
    let consistent = header_model == model
        && content == format!("Answer from {id}.")
        && answer["usage"]["total_tokens"] == 17
        && REPLICAS.contains(&replica.as_str());
    if !consistent {
        return Err(format!(
            "inconsistent answer (x-r2-model {header_model:?}, replica {replica:?}): {text}"
        ));
    }
    Ok(Answer {
        model,
        replica,
        content,
    })
}

/// An error with its sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// Runs conversations `first..end` on `clients` concurrent clients, each client taking the next
/// conversation when it has finished one; every turn's outcome goes to `outcomes`, and `done`
/// counts the requests answered (or failed).
async fn run_conversations(
    url: String,
    conversations: std::ops::Range<usize>,
    clients: usize,
    provider_ids: Arc<HashMap<String, String>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    done: Arc<AtomicUsize>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(conversations.start));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        let (provider_ids, outcomes, done) = (provider_ids.clone(), outcomes.clone(), done.clone());
        let end = conversations.end;
        tasks.spawn(async move {
            loop {
                let conversation = next.fetch_add(1, Ordering::SeqCst);
                if conversation >= end {
                    break;
                }
                let mut messages = Vec::new();
                for turn in 1..=TURNS {
                    messages
                        .push(json!({"role": "user", "content": user_text(conversation, turn)}));
                    let started = Instant::now();
                    let answer = chat(&client, &url, &messages, &provider_ids).await;
                    let latency = started.elapsed();
                    // A failed turn still gets an assistant message, so the conversation goes on.
                    let reply = answer
                        .as_ref()
                        .map_or("(no answer)".to_owned(), |a| a.content.clone());
                    messages.push(json!({"role": "assistant", "content": reply}));
                    outcomes.lock().unwrap().push(Outcome {
                        conversation,
                        turn,
                        started,
                        latency,
                        answer,
                    });
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a client task panicked");
    }
}

/// Waits at most `timeout` for `condition`, polling every millisecond.
fn wait_until(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The pool model `POST /v1/route` chooses for each of `queries` (one batch request).
async fn routed_models(base: &str, queries: &[String]) -> Vec<String> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v1/route"))
        .json(&json!({ "queries": queries }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no decisions: {answer}"))
        .iter()
        .map(|d| d["model"].as_str().unwrap().to_owned())
        .collect()
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("${name} is not a number: {v}"))
        })
        .unwrap_or(default)
}

#[test]
fn replicas_behind_haproxy_drain_on_sigterm_survive_sigkill_and_keep_conversations_on_one_model() {
    let Some(haproxy_bin) = gateway::tool(
        "R2_HAPROXY",
        Some("/usr/sbin/haproxy"),
        "HAProxy (apt-get install haproxy)",
    ) else {
        return;
    };
    let wall = Instant::now();
    let conversations = env_number("R2_SCALE_CONVERSATIONS", 80);
    let clients = env_number("R2_SCALE_CLIENTS", 8).max(1);
    let retry_on = std::env::var("R2_SCALE_RETRY_ON").unwrap_or_else(|_| RETRY_ON.to_owned());
    let temp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("R2_SCALE_OUT_DIR") {
        Some(dir) => {
            let dir = std::path::absolute(PathBuf::from(dir)).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }
        None => temp.path().to_owned(),
    };

    let provider = Provider::start(Duration::from_millis(25));
    let embedder = gateway::start_embedder();
    let provider_ids: Arc<HashMap<String, String>> = Arc::new(
        r2_fixtures::upstream_pool()
            .models
            .iter()
            .map(|m| (m.name.clone(), m.openrouter_id.clone()))
            .collect(),
    );
    // Started together, then waited for. The default `--route-on first`; λ 0.5, because at the
    // pool's default (0.99999) these texts all go to one model and stickiness would prove nothing.
    let mut replicas: BTreeMap<&str, Serve> = std::thread::scope(|scope| {
        let starting: Vec<_> = REPLICAS
            .iter()
            .map(|&name| {
                let base = provider.base(name);
                let handle = scope.spawn(move || {
                    Serve::start(
                        &base,
                        embedder,
                        &["--drain-timeout", "10", "--lambda", "0.5"],
                    )
                });
                (name, handle)
            })
            .collect();
        starting
            .into_iter()
            .map(|(name, handle)| (name, handle.join().unwrap()))
            .collect()
    });
    let servers: Vec<(&str, SocketAddr)> = replicas.iter().map(|(&n, s)| (n, s.addr)).collect();
    let mut haproxy = Haproxy::start(&haproxy_bin, &dir, &servers, &retry_on);
    for name in REPLICAS {
        haproxy.wait_status(name, "UP", Duration::from_secs(10));
    }
    let base = format!("http://{}", haproxy.addr);
    let url = format!("{base}/v1/chat/completions");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The decision for each user message, to check the chat answers against and to know that
    // routing on the last message would break conversations apart.
    let keys: Vec<(usize, usize)> = (0..conversations + AFTER_DOWN)
        .flat_map(|c| (1..=TURNS).map(move |t| (c, t)))
        .collect();
    let queries: Vec<String> = keys.iter().map(|&(c, t)| user_text(c, t)).collect();
    let decisions: HashMap<(usize, usize), String> = keys
        .into_iter()
        .zip(runtime.block_on(routed_models(&base, &queries)))
        .collect();
    let first_models: BTreeSet<&String> = (0..conversations).map(|c| &decisions[&(c, 1)]).collect();
    assert!(
        first_models.len() >= 2,
        "the conversations all route to {first_models:?}: stickiness would prove nothing"
    );
    let split = (0..conversations)
        .filter(|&c| (2..=TURNS).any(|t| decisions[&(c, t)] != decisions[&(c, 1)]))
        .count();
    assert!(
        split > 0,
        "no conversation's later messages route elsewhere than its first: routing on the last \
         message would pass too"
    );

    // The load, with SIGTERM and SIGKILL on the way.
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let load = runtime.spawn(run_conversations(
        url.clone(),
        0..conversations,
        clients,
        provider_ids.clone(),
        outcomes.clone(),
        done.clone(),
    ));
    let total = conversations * TURNS;
    let limit = Duration::from_secs(20);

    // SIGTERM with requests in flight on the replica: its provider answers are held until the
    // replica has logged that it is shutting down.
    wait_until("a quarter of the load", limit, || {
        done.load(Ordering::SeqCst) >= total / 4
    });
    provider.hold(DRAINED);
    wait_until("a request in flight on the drained replica", limit, || {
        provider.in_flight(DRAINED) >= 1
    });
    // Held, so these are answered only after the replica has the signal.
    let in_flight_at_sigterm = provider.in_flight(DRAINED);
    let drained = &replicas[DRAINED];
    let sigterm_at = Instant::now();
    sigterm(drained.process.id());
    drained
        .log
        .wait_for(limit, |l| l.contains("r2 serve: shutting down"))
        .expect("the drained replica logs its shutdown");
    provider.release(DRAINED);

    // SIGKILL with requests in flight on another replica.
    wait_until("half of the load", limit, || {
        done.load(Ordering::SeqCst) >= total / 2
    });
    provider.hold(KILLED);
    wait_until("a request in flight on the killed replica", limit, || {
        provider.in_flight(KILLED) >= 1
    });
    let in_flight_at_sigkill = provider.in_flight(KILLED);
    let on_killed = haproxy
        .stat()
        .into_iter()
        .find(|row| row["pxname"] == "replicas" && row["svname"] == KILLED)
        .map(|row| row["scur"].clone())
        .unwrap_or_default();
    replicas.get_mut(KILLED).unwrap().process.0.kill().unwrap();
    let sigkill_at = Instant::now();
    provider.release(KILLED);
    haproxy.wait_status(KILLED, "DOWN", Duration::from_secs(10));
    let down_after = sigkill_at.elapsed();
    haproxy.wait_status(DRAINED, "DOWN", Duration::from_secs(10));

    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(40), load).await })
        .expect("the load finished within 40 s")
        .unwrap();
    // The killed replica is DOWN: everything from now on must succeed, on the one left.
    let after_down = Instant::now();
    runtime.block_on(run_conversations(
        url,
        conversations..conversations + AFTER_DOWN,
        clients,
        provider_ids,
        outcomes.clone(),
        done.clone(),
    ));
    let drained_exit = replicas
        .get_mut(DRAINED)
        .unwrap()
        .process
        .wait_for(Duration::from_secs(15))
        .expect("the drained replica exits within 15 s");
    assert!(
        drained_exit.success(),
        "the drained replica exited with {drained_exit:?}"
    );
    let drained_log = replicas[DRAINED]
        .log
        .all_when_closed(Duration::from_secs(5))
        .join("\n");
    assert!(drained_log.contains("r2 serve: stopped"), "{drained_log}");
    assert_eq!(haproxy.status("r3"), "UP");
    // Stop HAProxy so that its log is complete.
    let _ = haproxy.process.0.kill();
    let _ = haproxy.process.0.wait();
    let haproxy_log = haproxy.log.all_when_closed(Duration::from_secs(5));
    std::fs::write(dir.join("haproxy.log"), haproxy_log.join("\n")).unwrap();

    // Tally.
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), (conversations + AFTER_DOWN) * TURNS);
    let spans_sigkill = |o: &Outcome| o.started < sigkill_at && o.started + o.latency >= sigkill_at;
    let at_sigkill = outcomes.iter().filter(|o| spans_sigkill(o)).count();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.answer.is_err()).collect();
    let (failed_at_sigkill, unexpected): (Vec<&Outcome>, Vec<&Outcome>) =
        failed.iter().partition(|o| spans_sigkill(o));
    let retried = haproxy_log
        .iter()
        .filter(|l| l.starts_with("r2log") && !l.contains("retries=0 "))
        .count();
    let mut latencies: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.answer.is_ok())
        .map(|o| o.latency)
        .collect();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut served: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &outcomes {
        if let Ok(a) = &o.answer {
            *served.entry(a.replica.as_str()).or_default() += 1;
        }
    }
    eprintln!(
        "scale-out: {} requests ({} conversations × {TURNS} turns, {clients} clients; the last \
         {} after {KILLED} was DOWN), {} failed ({} of the {at_sigkill} in flight at SIGKILL, {} \
         other); SIGTERM to {DRAINED} with {in_flight_at_sigterm} held in flight there; SIGKILL \
         to {KILLED} with {on_killed} on it in HAProxy's stats ({in_flight_at_sigkill} at the \
         provider), DOWN {:.0} ms later; HAProxy retried {retried} requests (retry-on \
         {retry_on}); served {served:?}; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max \
         {:.1} ms; wall {:.1} s",
        outcomes.len(),
        conversations + AFTER_DOWN,
        AFTER_DOWN * TURNS,
        failed.len(),
        failed_at_sigkill.len(),
        unexpected.len(),
        ms(down_after),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.9)),
        ms(quantile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        wall.elapsed().as_secs_f64(),
    );
    for o in &failed {
        eprintln!(
            "  failed: conversation {} turn {}: {:?}",
            o.conversation, o.turn, o.answer
        );
    }

    // No failure but requests in flight at SIGKILL; with empty-response in retry-on, HAProxy
    // sends those again to another replica, so none at all.
    assert!(
        unexpected.is_empty(),
        "requests failed outside the SIGKILL: {unexpected:#?}"
    );
    if retry_on.split_whitespace().any(|r| r == "empty-response") {
        assert!(
            failed_at_sigkill.is_empty(),
            "requests in flight at SIGKILL failed although HAProxy retries empty responses: \
             {failed_at_sigkill:#?}"
        );
    }
    // The drain: the requests held on the drained replica were in flight at SIGTERM and
    // answered by it afterwards.
    assert!(in_flight_at_sigterm >= 1);
    let answered_in_drain = outcomes
        .iter()
        .filter(|o| o.started < sigterm_at && o.started + o.latency > sigterm_at)
        .filter(|o| o.answer.as_ref().is_ok_and(|a| a.replica == DRAINED))
        .count();
    assert!(
        answered_in_drain >= in_flight_at_sigterm,
        "{in_flight_at_sigterm} requests were in flight on {DRAINED} at SIGTERM, \
         {answered_in_drain} answered by it after"
    );
    // After DOWN: every request answered, by the replica left.
    let late: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started >= after_down)
        .collect();
    assert_eq!(late.len(), AFTER_DOWN * TURNS);
    for o in &late {
        let answer = o.answer.as_ref().expect("no failure after DOWN");
        assert_eq!(answer.replica, "r3", "{o:?}");
    }
    // Stickiness: every turn of a conversation on the model its first message routes to,
    // whichever replica answered; and conversations did move between replicas.
    let mut moved = 0;
    for conversation in 0..conversations + AFTER_DOWN {
        let turns: Vec<&Answer> = outcomes
            .iter()
            .filter(|o| o.conversation == conversation)
            .filter_map(|o| o.answer.as_ref().ok())
            .collect();
        let first = &decisions[&(conversation, 1)];
        for answer in &turns {
            assert_eq!(
                &answer.model, first,
                "conversation {conversation}: a turn answered by {} (replica {}), its first \
                 message routes to {first}",
                answer.model, answer.replica
            );
        }
        let replicas: BTreeSet<&str> = turns.iter().map(|a| a.replica.as_str()).collect();
        moved += usize::from(replicas.len() > 1);
    }
    assert!(
        moved > 0,
        "no conversation was served by more than one replica"
    );
    for name in REPLICAS {
        assert!(
            served.get(name).copied().unwrap_or(0) > 0,
            "{name} served nothing: {served:?}"
        );
    }
}
