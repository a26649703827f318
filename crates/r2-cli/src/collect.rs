//! `r2 collect`: answer every query with every pool model at every budget (the request routing
//! sends), grade each answer with a judge model, and write `r2 train`'s records, resumably.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use r2_router::collect::{self, Clients, CollectConfig, JudgePrompt, Progress};
use r2_router::r2_core::Budget;
use r2_router::r2_llm::{ApiKey, LlmClient, LlmOptions, Prices};

use crate::text::{self, EmbedderArgs};

#[derive(Args, Debug)]
pub struct CollectArgs {
    /// Queries: one a line, or JSONL of {"id"?, "query", "reference"?, "split"?} (ids default to
    /// the line number)
    #[arg(long, value_name = "FILE")]
    queries: PathBuf,

    /// Model pool config (JSON, upstream's config.json format): the models to answer with, their
    /// OpenRouter ids and prices
    #[arg(long, visible_alias = "config", value_name = "FILE")]
    pool: PathBuf,

    /// Folder to write records.jsonl, embeddings.jsonl, failures.jsonl and manifest.json into
    /// (created if needed; a rerun continues where the last one stopped)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// OpenAI-compatible chat API of the pool's models, e.g. https://openrouter.ai/api/v1
    #[arg(long, value_name = "URL", required_unless_present = "dry_run")]
    llm_api_base: Option<String>,

    /// API key for --llm-api-base [default: $OPENROUTER_API_KEY]
    #[arg(long, value_name = "KEY")]
    llm_api_key: Option<String>,

    /// The judge's model id on its API (an OpenAI-compatible chat model)
    #[arg(long, value_name = "ID")]
    judge_model: String,

    /// The judge's OpenAI-compatible chat API [default: --llm-api-base]
    #[arg(long, value_name = "URL")]
    judge_api_base: Option<String>,

    /// API key for the judge's API [default: the key of --llm-api-base]
    #[arg(long, value_name = "KEY")]
    judge_api_key: Option<String>,

    /// The judge's prices in USD per million input and output tokens, so its calls count towards
    /// the spend, --max-spend and the dry run's estimate [default: its pool prices when the judge
    /// is a pool model, else unknown and not counted]
    #[arg(long, value_delimiter = ',', value_name = "INPUT,OUTPUT")]
    judge_prices: Vec<f64>,

    /// Grading prompt template with {query}, {reference} and {response} placeholders [default:
    /// r2's prompt, asking for {"score": 0..1}]
    #[arg(long, value_name = "FILE")]
    judge_prompt: Option<PathBuf>,

    /// Limited budgets, comma-separated; `unlimited` is always added [default: the 15 released
    /// budgets, 10 … 4000]
    #[arg(long, value_delimiter = ',', value_name = "B1,B2")]
    budgets: Vec<Budget>,

    /// Calls in flight at once
    #[arg(long, default_value_t = collect::DEFAULT_CONCURRENCY, value_name = "N")]
    concurrency: usize,

    /// Stop starting calls once this run's answers (and judge calls, when their prices are known)
    /// cost this much (USD); exits non-zero
    #[arg(long, value_name = "USD")]
    max_spend: Option<f64>,

    /// Print the number of calls and an estimated cost, send nothing
    #[arg(long)]
    dry_run: bool,

    /// Sampling temperature of the answers
    #[arg(long, default_value_t = r2_router::DEFAULT_TEMPERATURE, value_name = "T")]
    temperature: f64,

    /// Write into a folder collected with another pool, budgets, judge or temperature
    #[arg(long)]
    force: bool,

    #[command(flatten)]
    embedder: EmbedderArgs,
}

pub fn run(args: CollectArgs) -> Result<()> {
    let pool = r2_router::r2_checkpoints::PoolConfig::from_file(&args.pool)
        .context("loading the pool config")?;
    let queries = collect::read_queries(&args.queries)?;
    let judge_prompt = match &args.judge_prompt {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the judge prompt {}", path.display()))?;
            JudgePrompt::new(&text, &path.display().to_string())?
        }
        None => JudgePrompt::default(),
    };
    let mut budgets: Vec<Budget> = if args.budgets.is_empty() {
        collect::default_budgets()
    } else {
        args.budgets.clone()
    };
    budgets.sort();
    budgets.dedup();
    if !budgets.contains(&Budget::Unlimited) {
        budgets.push(Budget::Unlimited);
    }
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!(
            "--temperature must be a finite number ≥ 0, got {}",
            args.temperature
        );
    }
    if let Some(cap) = args.max_spend {
        if !(cap.is_finite() && cap >= 0.0) {
            bail!("--max-spend must be a finite number of USD ≥ 0, got {cap}");
        }
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let judge_prices = match args.judge_prices[..] {
        [] => collect::judge_prices(&pool, &args.judge_model),
        [input, output] => {
            if ![input, output].iter().all(|p| p.is_finite() && *p >= 0.0) {
                bail!(
                    "--judge-prices must be two finite USD prices per million tokens ≥ 0 \
                     (input,output), got {input},{output}"
                );
            }
            Some(Prices {
                input_per_million: input,
                output_per_million: output,
            })
        }
        _ => bail!("--judge-prices takes two prices, input and output (e.g. 0.15,0.6)"),
    };
    let config = CollectConfig {
        queries,
        pool,
        budgets,
        judge_model: args.judge_model.clone(),
        judge_prompt,
        temperature: args.temperature,
        concurrency: args.concurrency,
        max_spend: args.max_spend,
        judge_prices,
        force: args.force,
    };

    if args.dry_run {
        return dry_run(&config, &args);
    }

    let key = args
        .llm_api_key
        .clone()
        .map(ApiKey::new)
        .or_else(ApiKey::from_env);
    let base = args
        .llm_api_base
        .as_deref()
        .expect("clap requires --llm-api-base without --dry-run");
    let generation = LlmClient::new(base, key.clone(), LlmOptions::default())
        .context("setting up the chat client of --llm-api-base")?;
    let judge = LlmClient::new(
        args.judge_api_base.as_deref().unwrap_or(base),
        args.judge_api_key.clone().map(ApiKey::new).or(key),
        LlmOptions::default(),
    )
    .context("setting up the judge's chat client")?;

    let runtime = text::runtime()?;
    let terminal = std::io::stderr().is_terminal();
    let options = r2_router::Options {
        embed_url: args.embedder.embed_url.clone(),
        embedding_model_dir: args.embedder.embedding_model_dir.clone(),
        embed_batch_size: Some(args.embedder.embed_batch_size),
        progress: terminal,
        ..r2_router::Options::default()
    };
    let embedder = runtime
        .block_on(r2_router::make_embedder(
            &options,
            &config.pool,
            Some(config.pool.embedding_dim),
        ))
        .map_err(crate::load::with_hint)
        .context("setting up the embedder")?;

    let started = std::time::Instant::now();
    let mut on_progress = |p: &Progress| {
        if terminal {
            // The time left at the pace so far.
            let elapsed = started.elapsed().as_secs_f64();
            let left = p.total.saturating_sub(p.finished) as f64;
            let eta = if p.finished > 0 {
                format!(", ETA {:.0} s", elapsed / p.finished as f64 * left)
            } else {
                String::new()
            };
            eprint!(
                "\rcollected {}/{} (spend ${:.4}, {} failed{eta})  ",
                p.finished, p.total, p.spend_usd, p.failed
            );
            let _ = std::io::stderr().flush();
        }
    };
    let summary = runtime
        .block_on(collect::collect(
            &config,
            &args.out,
            Clients {
                generation: &generation,
                judge: &judge,
                embedder: Some(embedder.as_ref()),
            },
            &mut on_progress,
        ))
        .context("collecting")?;
    if terminal && summary.progress.total > 0 {
        eprintln!();
    }

    let mut out = std::io::stdout().lock();
    let p = &summary.progress;
    writeln!(
        out,
        "{} recorded, {} failed, {} already done; {} generation and {} judge calls; spent ${:.6} \
         (answers ${:.6}, judge {})",
        p.recorded,
        p.failed,
        summary.skipped,
        summary.generation_calls,
        summary.judge_calls,
        p.spend_usd,
        p.spend_usd - p.judge_spend_usd,
        if config.judge_prices.is_some() {
            format!("${:.6}", p.judge_spend_usd)
        } else {
            "not counted: its prices are unknown (--judge-prices)".to_owned()
        }
    )?;
    for (model, n, mean) in &summary.per_model {
        if *n > 0 {
            writeln!(out, "  {model}: {n} records, mean score {mean:.4}")?;
        }
    }
    drop(out);
    if let Some(error) = &summary.halted {
        bail!(
            "stopped after {} of {} calls ({} not started), since every further call would fail \
             the same way: {error}; fix it (--llm-api-key, --judge-api-key, $OPENROUTER_API_KEY, \
             the API bases) and rerun to continue",
            p.finished,
            p.total,
            summary.not_started
        );
    }
    if summary.stopped_by_spend {
        bail!(
            "stopped at --max-spend ${:.6} after ${:.6}: {} of {} calls done, {} not started; \
             rerun (with a higher --max-spend) to continue where this run stopped",
            args.max_spend.unwrap_or_default(),
            p.spend_usd,
            p.finished,
            p.total,
            summary.not_started
        );
    }
    if p.failed > 0 {
        bail!(
            "{} calls failed after their retries (see {}); rerun to retry them",
            p.failed,
            args.out.join(collect::FAILURES_FILE).display()
        );
    }
    Ok(())
}

fn dry_run(config: &CollectConfig, args: &CollectArgs) -> Result<()> {
    let estimate = collect::estimate(config, &args.out)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} queries × {} models × {} budgets: {} generation calls and {} judge calls to make ({} \
         already done in {}{})",
        config.queries.len(),
        config.pool.models.len(),
        config.budgets.len(),
        estimate.generations,
        estimate.judge_calls,
        estimate.done,
        args.out.display(),
        if estimate.regrades > 0 {
            format!(
                "; {} answered earlier and only to be graded",
                estimate.regrades
            )
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "estimated cost of the answers: ${:.6} (a limited budget's answer taken as the whole \
         budget, an unlimited one as {} output tokens; input tokens estimated from the words)",
        estimate.generation_usd,
        collect::ASSUMED_OUTPUT_TOKENS
    )?;
    match estimate.judge_usd {
        Some(usd) => writeln!(
            out,
            "estimated cost of the judge: ${usd:.6} ({} output tokens a reply, judge retries not \
             counted)",
            collect::ASSUMED_JUDGE_REPLY_TOKENS
        )?,
        None => writeln!(
            out,
            "estimated cost of the judge: unknown ({} is not a pool model; give its prices with \
             --judge-prices INPUT,OUTPUT)",
            config.judge_model
        )?,
    }
    writeln!(out, "dry run: nothing was sent")?;
    Ok(())
}
