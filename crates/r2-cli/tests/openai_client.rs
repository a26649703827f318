//! The official `openai` Python client against `r2 serve` (a process, with the loopback provider
//! and embeddings server of `gateway`): `tools/openai_client_check.py` does a plain, a streamed,
//! an unrouted and a failing completion and tool calls plain and streamed, checking each with the
//! client's parsing; this test checks that the provider received the tools and tool choice
//! exactly as the client sent them, and the tool result of the follow-up turn.
//!
//! Needs `$R2_TEST_PYTHON`, a Python with `openai` (`.ci/run` makes one); without it the test is
//! skipped, or fails with `R2_REQUIRE_TOOLS=1`.

mod gateway;

use std::process::{Command, Stdio};
use std::time::Duration;

use gateway::{Guard, Lines, Provider, Serve};
use serde_json::Value;

#[test]
fn the_openai_python_client_completes_streams_and_calls_tools_through_r2_serve() {
    let Some(python) = gateway::tool("R2_TEST_PYTHON", None, "a Python with the `openai` package")
    else {
        return;
    };
    let provider = Provider::start(Duration::ZERO);
    let embedder = gateway::start_embedder();
    let serve = Serve::start(&provider.base("serve"), embedder, &[]);
    let script = r2_fixtures::workspace_root().join("tools/openai_client_check.py");

    let mut child = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}/v1", serve.addr))
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let stderr = Lines::collect(child.stderr.take().unwrap());
    let mut process = Guard(child);
    let status = process.wait_for(Duration::from_secs(120));
    let wait = Duration::from_secs(5);
    let out = stdout.all_when_closed(wait).join("\n");
    let err = stderr.all_when_closed(wait).join("\n");
    let status = status.unwrap_or_else(|| panic!("the script ran over 120 s:\n{out}\n{err}"));
    assert!(
        status.success(),
        "{} failed ({status}):\n{out}\n{err}\nr2 serve's log:\n{}",
        script.display(),
        serve.log.all().join("\n")
    );
    assert!(out.lines().any(|l| l.starts_with("OK")), "{out}");
    eprintln!("{out}");

    let sent: Value = out
        .lines()
        .find_map(|l| l.strip_prefix("SENT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("the script printed no SENT line:\n{out}"));
    let seen = provider.seen();
    let with_tools: Vec<&Value> = seen
        .iter()
        .map(|s| &s.body)
        .filter(|b| b.get("tools").is_some())
        .collect();
    // Plain call, streamed call, follow-up with the tool's result.
    assert_eq!(with_tools.len(), 3, "{with_tools:#?}");
    for body in &with_tools {
        assert_eq!(body["tools"], sent["tools"], "tools changed on the way");
    }
    assert_eq!(with_tools[0]["tool_choice"], sent["tool_choice"]);
    assert_eq!(with_tools[1]["tool_choice"], sent["tool_choice"]);
    assert_eq!(with_tools[1]["stream"], true);
    assert_eq!(with_tools[2]["tool_choice"], "none");
    // The follow-up: the budget prompt first, then the conversation as the client sent it.
    let messages = with_tools[2]["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool"],
        "{messages:#?}"
    );
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(messages[3]["tool_call_id"], "call_1");
    assert_eq!(messages[3]["content"], r#"{"celsius": 21}"#);
    // Every request reached the provider with a pool model's provider id.
    let pool = r2_fixtures::upstream_pool();
    for s in &seen {
        let model = s.body["model"].as_str().unwrap();
        assert!(
            pool.models.iter().any(|m| m.openrouter_id == model),
            "the provider was sent model {model:?}"
        );
    }
}
