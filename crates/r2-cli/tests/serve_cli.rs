//! `r2 serve` as a process: `--port 0` prints the real address, the keys never show on stderr,
//! and SIGTERM stops it cleanly. The endpoints themselves are tested in-process in r2-serve.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PROVIDER_KEY: &str = "sk-or-test-SERVE-SECRET-9191";
const CLIENT_KEY: &str = "client-SERVE-SECRET-5151";

/// Starts `r2 serve` on port 0 with a provider that fails with HTTP 500 (echoing the key it was
/// sent) and the golden embeddings; returns the process, its address and its stderr lines.
fn start() -> (Child, SocketAddr, mpsc::Receiver<String>) {
    start_with(&[])
}

/// [`start`] with more arguments.
fn start_with(extra: &[&str]) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    start_replying(r2_fixtures::ChatReply::Status(500), extra)
}

/// [`start_with`] with a provider answering `reply`.
fn start_replying(
    reply: r2_fixtures::ChatReply,
    extra: &[&str],
) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let (chat, _) = r2_fixtures::start_chat_server(reply);
    let table: HashMap<String, Vec<f64>> = r2_fixtures::golden_inputs()
        .into_iter()
        .map(|g| (format!("query{}", g.id), g.embedding))
        .collect();
    let embed = r2_fixtures::start_embeddings_server(table);
    let mut child = Command::new(env!("CARGO_BIN_EXE_r2"))
        .env_remove("R2_CHECKPOINTS")
        .env_remove("R2_CONFIG")
        .env_remove("OPENROUTER_API_KEY")
        .env("R2_SERVER_API_KEY", CLIENT_KEY)
        .arg("serve")
        .arg("--checkpoints")
        .arg(r2_fixtures::converted_router_dir())
        .arg("--config")
        .arg(r2_fixtures::upstream_dir().join("config.json"))
        .args(["--embed-url", &format!("http://{embed}")])
        .args(["--llm-api-base", &format!("http://{chat}/api/v1")])
        .args(["--llm-api-key", PROVIDER_KEY])
        .args(["--port", "0", "--provider-retries", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("r2 serve printed nothing");
    let address = line
        .strip_prefix("r2 serve: listening on http://")
        .and_then(|rest| rest.split_once(' '))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .0
        .parse()
        .unwrap();
    assert!(line.contains("client auth on"), "{line}");
    check_no_key(&line);
    (child, address, rx)
}

fn check_no_key(text: &str) {
    assert!(!text.contains("SERVE-SECRET"), "a key leaked: {text}");
}

/// One HTTP/1.1 request; returns the status and the whole response.
fn http(address: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"));
    (status, response)
}

fn get(address: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: r2\r\n{auth}Connection: close\r\n\r\n"),
    )
}

fn post(address: SocketAddr, path: &str, body: &str, key: &str) -> (u16, String) {
    http(
        address,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: r2\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn serve_on_port_zero_answers_keeps_keys_out_of_its_log_and_stops_on_sigterm() {
    let (mut child, address, stderr) = start();
    assert_eq!(address.ip().to_string(), "127.0.0.1");
    assert_ne!(address.port(), 0);

    assert_eq!(get(address, "/healthz", None).0, 200);
    assert_eq!(get(address, "/v1/models", None).0, 401);
    let (status, models) = get(address, "/v1/models", Some(CLIENT_KEY));
    assert_eq!(status, 200);
    assert!(models.contains("\"r2-router\""), "{models}");
    let (status, route) = post(address, "/v1/route", r#"{"query": "query3"}"#, CLIENT_KEY);
    assert_eq!(status, 200);
    assert!(route.contains("\"openrouter_id\""), "{route}");
    // The provider fails and echoes the key it was sent; neither the client nor the log sees it.
    let chat = r#"{"model": "r2-router", "messages": [{"role": "user", "content": "query3"}]}"#;
    let (status, answer) = post(address, "/v1/chat/completions", chat, CLIENT_KEY);
    assert_eq!(status, 502);
    check_no_key(&answer);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let log: Vec<String> = stderr.iter().collect();
    let log = log.join("\n");
    check_no_key(&log);
    assert!(log.contains("r2 serve: 502"), "{log}");
    assert!(log.contains("r2 serve: stopped"), "{log}");
}

#[test]
fn serve_help_lists_the_connection_limits_and_timeouts_with_their_defaults() {
    let output = Command::new(env!("CARGO_BIN_EXE_r2"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    // Each flag with its default, as clap prints it (the text may wrap between them).
    for (flag, default) in [
        ("--max-connections <N>", "[default: 256]"),
        ("--header-timeout <SECONDS>", "[default: 10]"),
        ("--body-timeout <SECONDS>", "[default: 30]"),
        ("--idle-timeout <SECONDS>", "[default: 30]"),
        ("--send-timeout <SECONDS>", "[default: 30]"),
        ("--drain-timeout <SECONDS>", "[default: 30]"),
        ("--max-concurrency <N>", "[default: 512]"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
        // The flag's entry: its line and the lines up to the next flag.
        let mut lines = help[at..].lines();
        let mut entry = lines.next().unwrap_or_default().to_owned();
        for line in lines.take_while(|l| !l.trim_start().starts_with('-')) {
            entry.push_str(line);
        }
        assert!(entry.contains(default), "{flag}: no {default} in {entry:?}");
    }
}

#[test]
fn serve_refuses_zero_timeouts_and_a_zero_connection_cap() {
    for (flag, value) in [
        ("--header-timeout", "0"),
        ("--body-timeout", "-1"),
        ("--idle-timeout", "0"),
        ("--send-timeout", "nan"),
        ("--drain-timeout", "-2"),
        ("--max-connections", "0"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_r2"))
            .env_remove("R2_SERVER_API_KEY")
            .args(["serve", "--port", "0", flag, value])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn serve_closes_half_sent_heads_and_sigterm_does_not_wait_for_a_stalled_body() {
    let (mut child, address, stderr) = start_with(&[
        "--header-timeout",
        "0.3",
        "--body-timeout",
        "120",
        "--drain-timeout",
        "0.5",
        "--max-connections",
        "4",
    ]);

    // Half-sent heads, more than the cap: each is closed without an answer.
    let mut half = Vec::new();
    for _ in 0..6 {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: r2\r\n")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        half.push(stream);
    }
    for stream in &mut half {
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest)),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert_eq!(get(address, "/healthz", None).0, 200);

    // A body that never comes, then SIGTERM: the server stops after the drain timeout, not the
    // body timeout.
    let mut stalled = TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /v1/route HTTP/1.1\r\nHost: r2\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("r2 serve did not stop within 30 s of SIGTERM with a stalled body");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let log: Vec<String> = stderr.iter().collect();
    let log = log.join("\n");
    check_no_key(&log);
    assert!(log.contains("r2 serve: stopped"), "{log}");
}

#[test]
fn serve_with_log_format_json_logs_a_failed_request_as_one_json_line_with_its_decision() {
    let (child, address, stderr) = start_with(&["--log-format", "json"]);
    let chat = r#"{"model": "r2-router", "messages": [{"role": "user", "content": "query3"}]}"#;
    let (status, _) = post(address, "/v1/chat/completions", chat, CLIENT_KEY);
    assert_eq!(status, 502);

    let log = stop(child, stderr);
    let line = log
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("r2 serve: 502 POST /v1/chat/completions"))
        })
        .unwrap_or_else(|| panic!("no JSON line for the 502 in {log:#?}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["status"], 502, "{line}");
    assert!(line["model"].is_string(), "{line}");
    assert!(line["budget"].is_string(), "{line}");
    // The whole error, which the client does not see.
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{line}"
    );
    assert!(
        log.iter().any(|l| l.contains("r2 serve: stopped")),
        "{log:#?}"
    );
}

/// The access-log lines (target `r2_serve::access`) of a `--log-format json` server's stderr,
/// after SIGTERM.
fn access_lines(child: Child, stderr: mpsc::Receiver<String>) -> Vec<serde_json::Value> {
    stop(child, stderr)
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["request_id"].is_string())
        .collect()
}

#[test]
fn the_access_log_has_one_json_line_per_request_and_the_prompt_only_when_asked() {
    let chat = r#"{"model": "r2-router", "messages": [{"role": "user", "content": "query3"}]}"#;
    for log_prompts in [false, true] {
        let extra: &[&str] = if log_prompts {
            &["--log-format", "json", "--log-prompts"]
        } else {
            &["--log-format", "json"]
        };
        let (child, address, stderr) = start_replying(r2_fixtures::ChatReply::Ok, extra);
        let (status, answer) = post(address, "/v1/chat/completions", chat, CLIENT_KEY);
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("x-request-id:"),
            "{answer}"
        );
        let (status, _) = post(address, "/v1/route", r#"{"query": "query3"}"#, CLIENT_KEY);
        assert_eq!(status, 200);
        let lines = access_lines(child, stderr);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        let line = &lines[0];
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["path"], "/v1/chat/completions", "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
        assert!(
            line["model"].is_string() && line["budget"].is_string(),
            "{line}"
        );
        // The provider's usage: 12 prompt and 5 completion tokens.
        assert_eq!(
            (
                line["prompt_tokens"].clone(),
                line["completion_tokens"].clone()
            ),
            (12.into(), 5.into())
        );
        assert!(line["cost_usd"].as_f64().unwrap() > 0.0, "{line}");
        for key in ["embed_ms", "route_ms", "provider_ms", "total_ms"] {
            assert!(line[key].is_u64(), "{key}: {line}");
        }
        assert_ne!(lines[0]["request_id"], lines[1]["request_id"]);
        assert_eq!(lines[1]["path"], "/v1/route");
        let text = lines[0].to_string();
        assert_eq!(text.contains("query3"), log_prompts, "{text}");
    }
}

#[test]
fn a_streamed_answer_writes_its_tokens_and_cost_in_a_second_access_line_when_it_ends() {
    let chat = r#"{"model": "r2-router", "stream": true,
                   "messages": [{"role": "user", "content": "query3"}]}"#;
    let (child, address, stderr) =
        start_replying(r2_fixtures::ChatReply::Ok, &["--log-format", "json"]);
    let (status, answer) = post(address, "/v1/chat/completions", chat, CLIENT_KEY);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("data: [DONE]"), "{answer}");
    let lines = access_lines(child, stderr);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let (head, end) = (&lines[0], &lines[1]);
    assert_eq!(head["status"], 200, "{head}");
    assert!(head["prompt_tokens"].is_null(), "{head}");
    assert_eq!(end["message"], "r2 serve: stream ended", "{end}");
    assert_eq!(end["level"], "INFO", "{end}");
    assert_eq!(end["request_id"], head["request_id"], "{end}");
    assert_eq!(end["model"], head["model"], "{end}");
    // The provider's usage: 12 prompt and 5 completion tokens.
    assert_eq!(
        (
            end["prompt_tokens"].clone(),
            end["completion_tokens"].clone()
        ),
        (12.into(), 5.into()),
        "{end}"
    );
    assert!(end["cost_usd"].as_f64().unwrap() > 0.0, "{end}");
}

/// Stops the server with SIGTERM (it must exit 0) and returns its stderr lines, checked for keys.
fn stop(mut child: Child, stderr: mpsc::Receiver<String>) -> Vec<String> {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    let log: Vec<String> = stderr.iter().collect();
    check_no_key(&log.join("\n"));
    log
}
