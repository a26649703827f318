//! Routes a query and, with an API base, generates the answer.
//!
//! ```text
//! cargo run --release -p r2-router --example route_and_generate -- "What is the capital of France?"
//! OPENROUTER_API_KEY=sk-or-... cargo run --release -p r2-router --example route_and_generate -- \
//!     "What is the capital of France?" https://openrouter.ai/api/v1
//! ```
//!
//! The first run fetches the released checkpoints and Qwen3-0.6B (about 1.5 GB) into the caches.

use r2_router::{Options, R2Router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let query = args
        .next()
        .ok_or("usage: route_and_generate QUERY [LLM_API_BASE]")?;
    let router = R2Router::load(Options {
        llm_api_base: args.next(),
        progress: true,
        ..Options::default()
    })
    .await?;
    let params = router.default_params()?;
    if router.can_generate() {
        let answer = router.route_and_generate(&query, &params).await?;
        let choice = &answer.decision.choice;
        println!(
            "{} @ {} tokens",
            router.model_name(choice.model),
            choice.budget
        );
        println!("{}", answer.generation.text);
        println!("cost: ${:.8}", answer.generation.cost_usd);
    } else {
        let decision = router.route_text(&query, &params).await?;
        let choice = &decision.choice;
        println!(
            "{} @ {} tokens: predicted quality {:.4}, cost ${:.8}",
            router.model_name(choice.model),
            choice.budget,
            choice.quality,
            choice.cost
        );
    }
    Ok(())
}
