//! `r2 collect` through the binary, against loopback OpenAI-protocol servers started in the test:
//! dry run, a garbage judge, the spend cap, resuming after SIGKILL, and `r2 train` on the output.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;

use r2_fixtures::collect::*;

const KEY: &str = "sk-test-secret-key";

struct Setup {
    _dir: tempfile::TempDir,
    queries: std::path::PathBuf,
    pool: std::path::PathBuf,
    out: std::path::PathBuf,
    provider: String,
    state: std::sync::Arc<ProviderState>,
    judge: String,
    embed: String,
}

fn setup(judge: Judge) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries.jsonl");
    std::fs::write(&queries, queries_jsonl()).unwrap();
    let pool = dir.path().join("pool.json");
    std::fs::write(&pool, POOL).unwrap();
    let out = dir.path().join("out");
    let (provider, state) = start_provider();
    let (judge, _) = start_judge(judge);
    Setup {
        queries,
        pool,
        out,
        provider,
        state,
        judge,
        embed: start_embedder(),
        _dir: dir,
    }
}

fn collect(s: &Setup, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
    cmd.env_remove("OPENROUTER_API_KEY")
        .env_remove("R2_CONFIG")
        .arg("collect")
        .arg("--queries")
        .arg(&s.queries)
        .arg("--pool")
        .arg(&s.pool)
        .arg("--out")
        .arg(&s.out)
        .args(["--llm-api-base", &s.provider, "--llm-api-key", KEY])
        .args(["--judge-api-base", &s.judge, "--judge-model", "judge/model"])
        .args(["--embed-url", &s.embed, "--budgets", "10,100"])
        .args(extra);
    cmd
}

fn output(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(KEY), "the key was printed: {all}");
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines of `path`, checking that the file ends with a newline.
fn lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "torn last line in {}",
        path.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn keys(records: &[serde_json::Value]) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .map(|r| format!("{} {} {}", r["query_id"], r["model"], r["budget"]))
        .collect();
    keys.sort();
    keys
}

#[test]
fn collected_data_trains_a_router() {
    let s = setup(Judge::Grade);
    let out = output(collect(&s, &["--concurrency", "4"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("36 recorded, 0 failed, 0 already done"),
        "{text}"
    );
    assert!(text.contains("alpha: 18 records, mean score"), "{text}");
    let records = lines(&s.out.join("records.jsonl"));
    assert_eq!(records.len(), 36);
    assert_eq!(lines(&s.out.join("embeddings.jsonl")).len(), 6);
    assert!(s.out.join("manifest.json").exists());

    let router = s.out.join("router");
    let train = output({
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
        // The folder itself: its records.jsonl and embeddings.jsonl, nothing else in it.
        cmd.arg("train")
            .arg("--data")
            .arg(&s.out)
            .arg("--pool")
            .arg(&s.pool)
            .arg("--out")
            .arg(&router);
        cmd
    });
    assert!(train.status.success(), "r2 train: {}", stderr(&train));
    assert!(router.join("router.safetensors").exists());

    // The whole loop: the trained router evaluated on the collected test queries (q5, q6) and
    // routing the collected embeddings.
    let r2_with = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
        cmd.env_remove("R2_CONFIG")
            .env_remove("R2_CHECKPOINTS")
            .args(args)
            .arg("--config")
            .arg(&s.pool)
            .arg("--checkpoints")
            .arg(&router);
        output(cmd)
    };
    let records_path = s.out.join("records.jsonl");
    let embeddings_path = s.out.join("embeddings.jsonl");
    let (records_arg, embeddings_arg) = (
        records_path.to_str().unwrap(),
        embeddings_path.to_str().unwrap(),
    );
    let eval = r2_with(&[
        "eval",
        "--json",
        "--data",
        records_arg,
        "--embeddings",
        embeddings_arg,
    ]);
    assert!(eval.status.success(), "r2 eval: {}", stderr(&eval));
    let report: serde_json::Value = serde_json::from_str(&stdout(&eval)).unwrap();
    // The provider's quality saturates with budget (alpha's 100-token answers are nearly as good
    // as its unlimited ones, at two thirds of the cost), so the budget-aware router's curve
    // dominates the point-based one's: the paper's AUDC (one global cost range) ranks it higher.
    let curve = |kind: &str| {
        report["curves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} curve in {report}"))
            .clone()
    };
    let (r2, point) = (curve("router"), curve("point_based"));
    let paper_audc = |c: &serde_json::Value| c["paper_audc"].as_f64().unwrap();
    assert!(
        paper_audc(&r2) > paper_audc(&point),
        "R2 {} vs point-based {}",
        paper_audc(&r2),
        paper_audc(&point)
    );
    assert!(curve("oracle_unlimited")["paper_audc"].is_number());
    let routed = r2_with(&["route", "--json", "--embeddings", embeddings_arg]);
    assert!(routed.status.success(), "r2 route: {}", stderr(&routed));
    let decisions: Vec<serde_json::Value> = stdout(&routed)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decisions.len(), 6);
    let mut ids: Vec<&str> = decisions
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["q1", "q2", "q3", "q4", "q5", "q6"]);
    for d in &decisions {
        assert!(
            ["alpha", "beta"].contains(&d["model"].as_str().unwrap()),
            "{d}"
        );
    }

    // A second run has nothing left to do.
    let again = output(collect(&s, &[]));
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("0 recorded, 0 failed, 36 already done"));
    assert_eq!(s.state.calls.load(Ordering::SeqCst), 36);

    // Other settings into the same folder are refused, naming the manifest.
    let other = output(collect(&s, &["--temperature", "0.2"]));
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("manifest.json"),
        "{}",
        stderr(&other)
    );
}

#[test]
fn a_dry_run_counts_and_estimates_without_sending() {
    let s = setup(Judge::Grade);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
    cmd.env_remove("OPENROUTER_API_KEY")
        .arg("collect")
        .arg("--queries")
        .arg(&s.queries)
        .arg("--pool")
        .arg(&s.pool)
        .arg("--out")
        .arg(&s.out)
        .args([
            "--judge-model",
            "lab/beta",
            "--budgets",
            "10,100",
            "--dry-run",
        ]);
    let out = output(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("6 queries × 2 models × 3 budgets: 36 generation calls and 36 judge calls"),
        "{text}"
    );
    assert!(text.contains("estimated cost of the answers: $"), "{text}");
    assert!(text.contains("500 output tokens"), "{text}");
    assert!(text.contains("estimated cost of the judge: $"), "{text}");
    assert!(text.contains("nothing was sent"), "{text}");
    assert_eq!(s.state.calls.load(Ordering::SeqCst), 0);
    assert!(!s.out.exists(), "a dry run writes nothing");

    // A judge outside the pool: unknown unless its prices are given; bad prices are refused.
    let judge_text = |extra: &[&str]| {
        let mut cmd = collect(&s, &["--dry-run"]);
        cmd.args(extra);
        output(cmd)
    };
    let out = judge_text(&[]);
    assert!(
        stdout(&out).contains(
            "unknown (judge/model is not a pool model; give its prices with \
             --judge-prices"
        ),
        "{}",
        stdout(&out)
    );
    let out = judge_text(&["--judge-prices", "1,2"]);
    assert!(
        stdout(&out).contains("estimated cost of the judge: $"),
        "{}",
        stdout(&out)
    );
    let out = judge_text(&["--judge-prices", "1,-2"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--judge-prices must be two finite"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.state.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_judge_without_scores_leaves_failures_and_exits_non_zero() {
    let s = setup(Judge::Garbage);
    let out = output(collect(&s, &[]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("36 calls failed") && err.contains("failures.jsonl"),
        "{err}"
    );
    let failures = lines(&s.out.join("failures.jsonl"));
    assert_eq!(failures.len(), 36);
    assert!(failures.iter().all(|f| f["stage"] == "judge"));
    assert!(lines(&s.out.join("records.jsonl")).is_empty());
}

#[test]
fn a_bad_judge_prompt_is_refused_before_anything_is_sent() {
    let s = setup(Judge::Grade);
    let prompt = s.out.with_file_name("prompt.txt");
    std::fs::write(&prompt, "Grade {query}: {answer}").unwrap();
    let out = output(collect(&s, &["--judge-prompt", prompt.to_str().unwrap()]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("prompt.txt: unknown placeholder {answer}"),
        "{err}"
    );
    assert_eq!(s.state.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn the_spend_cap_stops_and_says_how_far_it_got() {
    let s = setup(Judge::Grade);
    let out = output(collect(
        &s,
        &["--concurrency", "1", "--max-spend", "0.000001"],
    ));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("stopped at --max-spend"), "{err}");
    // The first answers cost 2e-4 USD or less each; one is enough to reach the cap.
    assert_eq!(lines(&s.out.join("records.jsonl")).len(), 1);
    assert!(err.contains("1 of 36 calls done, 35 not started"), "{err}");
}

#[test]
fn a_run_killed_mid_way_resumes_without_losing_or_repeating_records() {
    let s = setup(Judge::Grade);
    s.state.slow_after.store(10, Ordering::SeqCst);
    let mut child = collect(&s, &["--concurrency", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let records = s.out.join("records.jsonl");
    // Wait for the first eight answers (the provider stalls from the eleventh call on).
    let mut waited = 0;
    while lines_now(&records) < 8 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "r2 collect ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += 1;
        assert!(waited < 3000, "r2 collect made no progress");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = std::fs::read_to_string(&records).unwrap();
    assert!(before.ends_with('\n'));
    // As if the kill had come mid-write.
    let mut torn = before.clone();
    torn.push_str("{\"query_id\": \"q6\", \"model\": \"al");
    std::fs::write(&records, torn).unwrap();

    s.state.slow_after.store(0, Ordering::SeqCst);
    let out = output(collect(&s, &["--concurrency", "2"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let after = std::fs::read_to_string(&records).unwrap();
    assert!(
        after.starts_with(&before),
        "records written before the kill were kept"
    );
    let all = lines(&records);
    assert_eq!(all.len(), 36);
    let keys = keys(&all);
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(keys, unique, "one record per (query, model, budget)");
}

fn lines_now(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.matches('\n').count())
        .unwrap_or(0)
}

#[test]
fn a_rejected_key_stops_the_run_instead_of_failing_every_call() {
    let mut s = setup(Judge::Grade);
    let (addr, seen) = r2_fixtures::start_chat_server(r2_fixtures::ChatReply::Unauthorized);
    s.provider = format!("http://{addr}/api/v1");
    let out = output(collect(&s, &["--concurrency", "1"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("stopped after 1 of 36 calls (35 not started)"),
        "{err}"
    );
    assert!(err.contains("--llm-api-key"), "{err}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "one rejected call, then no more"
    );
    assert_eq!(lines(&s.out.join("failures.jsonl")).len(), 1);
}
