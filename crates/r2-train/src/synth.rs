//! A deterministic generator of training/evaluation data with known structure, for tests,
//! benchmarks and trying `r2 train` / `r2 eval` without real data (`cargo xtask gen-data`).
//!
//! The world it simulates:
//!
//! - Each query has a latent difficulty `d ~ N(0.6, 0.9²)` and a mix of 4 topics; its embedding is
//!   `d·v₀ + Σₜ zₜ·vₜ + noise` over fixed random directions `v`, so quality is (nearly) linear in
//!   the embedding, as the Ridge heads assume. Input tokens are `20 + Exp(mean 150)`.
//! - Each model has a skill, per-topic affinities, a *saturation budget* τ and a verbosity. Its
//!   probability of a correct answer is `σ(1.5·(skill + affinity·z − d)) · (1 − e^(−b/τ))` at budget
//!   `b`, and `σ(…)` without a budget. The score is a Bernoulli draw of it (0 or 1), or the mean of
//!   `score_samples` draws (graded scores).
//! - Without a budget a model writes `verbosity · e^(0.35·N(0,1)) · (1 + 0.25·d)` tokens; with
//!   budget `b` it writes about `min(b, that)`, sometimes overshooting `b` by up to 15%. Output
//!   tokens grow with the budget.
//! - The pool mixes strong and weak, cheap and expensive models. The first model is strong,
//!   expensive and verbose (1500 tokens without a budget) but *saturates at short budgets* (τ = 25
//!   tokens): told to answer in 100 tokens it is nearly as good as without a budget for a fifteenth
//!   of the cost. This is the structure of the
//!   R2-Router paper that makes budget-aware routing beat point-based routing.
//!
//! Output: `records.jsonl` (one record per query × model × budget, `unlimited` included),
//! `embeddings.jsonl` (`{"id", "input_tokens", "embedding"}`, which `r2 route --embeddings` reads
//! too; or embeddings inline on each query's first record) and `pool.json` (a pool config with the
//! models and prices). The same seed always gives the same bytes.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A model of the synthetic pool.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthModel {
    pub name: &'static str,
    pub input_price_per_million: f64,
    pub output_price_per_million: f64,
    /// Higher is better; compared with the query difficulty.
    pub skill: f64,
    /// Budget (tokens) at which the model reaches 63% of its unbudgeted quality.
    pub saturation: f64,
    /// Mean output tokens without a budget.
    pub verbosity: f64,
}

/// The 11 models of the synthetic pool, the strong model that saturates early first.
pub const MODELS: [SynthModel; 11] = [
    m("strong-brief", 1.0, 8.0, 2.2, 25.0, 1500.0),
    m("strong-reasoner", 1.25, 10.0, 1.9, 600.0, 1800.0),
    m("large-a", 0.6, 2.4, 1.5, 80.0, 700.0),
    m("large-b", 0.5, 1.5, 1.3, 120.0, 650.0),
    m("mid-a", 0.3, 1.2, 1.0, 60.0, 500.0),
    m("mid-b", 0.2, 0.8, 0.9, 150.0, 600.0),
    m("verbose-c", 0.15, 0.6, 1.1, 300.0, 1500.0),
    m("small-a", 0.05, 0.1, 0.3, 40.0, 300.0),
    m("small-b", 0.03, 0.06, 0.1, 60.0, 250.0),
    m("tiny", 0.01, 0.02, -0.5, 20.0, 150.0),
    m("specialist", 0.1, 0.1, 0.2, 100.0, 400.0),
];

const fn m(
    name: &'static str,
    input: f64,
    output: f64,
    skill: f64,
    saturation: f64,
    verbosity: f64,
) -> SynthModel {
    SynthModel {
        name,
        input_price_per_million: input,
        output_price_per_million: output,
        skill,
        saturation,
        verbosity,
    }
}

const TOPICS: usize = 4;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub queries: usize,
    /// Number of the first query (`q<first_query>`): more queries of the same world, e.g. a
    /// held-out set, come from the same seed with another `first_query`.
    pub first_query: usize,
    /// The first `models` of [`MODELS`] (1 to 11).
    pub models: usize,
    /// Limited budgets, ascending (`unlimited` is always added).
    pub budgets: Vec<u32>,
    pub dim: usize,
    pub seed: u64,
    /// Share of queries marked `"split": "test"` (the others `"train"`); 0: no split field.
    pub test_fraction: f64,
    /// Embeddings on each query's first record instead of a separate file.
    pub inline_embeddings: bool,
    /// Each score is the mean of this many Bernoulli draws (1: scores are 0 or 1; more: graded
    /// scores with less noise, like the mean of several samples or a judge's grade).
    pub score_samples: u32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            queries: 1000,
            first_query: 0,
            models: MODELS.len(),
            budgets: r2_core::UPSTREAM_BUDGETS.to_vec(),
            dim: 64,
            seed: 42,
            test_fraction: 0.2,
            inline_embeddings: false,
            score_samples: 1,
        }
    }
}

/// The files written by [`write()`].
#[derive(Debug, Clone, PartialEq)]
pub struct SynthFiles {
    pub records: PathBuf,
    /// `None` with inline embeddings.
    pub embeddings: Option<PathBuf>,
    pub pool: PathBuf,
    pub record_count: usize,
}

/// SplitMix64: small, fast, and good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The pool config JSON of the first `models` synthetic models.
pub fn pool_json(models: usize, dim: usize) -> String {
    let entries: Vec<String> = MODELS[..models]
        .iter()
        .map(|m| {
            format!(
                "    \"{}\": {{\"openrouter_id\": \"synthetic/{}\", \"input_price_per_million\": {}, \"output_price_per_million\": {}, \"available\": false}}",
                m.name, m.name, m.input_price_per_million, m.output_price_per_million
            )
        })
        .collect();
    format!(
        "{{\n  \"router_name\": \"synthetic\",\n  \"embedding_model\": \"synthetic-{dim}\",\n  \"embedding_dim\": {dim},\n  \"default_lambda\": 0.99999,\n  \"models\": {{\n{}\n  }}\n}}\n",
        entries.join(",\n")
    )
}

/// Writes `records.jsonl`, `embeddings.jsonl` (unless inline) and `pool.json` into `dir`.
pub fn write(config: &SynthConfig, dir: &Path) -> std::io::Result<SynthFiles> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
    if !(1..=MODELS.len()).contains(&config.models) {
        return Err(invalid("models must be 1 to 11"));
    }
    if config.dim < TOPICS + 1 {
        return Err(invalid("dim must be at least 5"));
    }
    if config.budgets.first() == Some(&0) || config.budgets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid("budgets must be positive and ascending"));
    }
    std::fs::create_dir_all(dir)?;
    let models = &MODELS[..config.models];
    let dim = config.dim;

    // The fixed structure: directions, affinities.
    let mut world = Rng::new(config.seed ^ 0x5EED_0000_0000_0001);
    let scale = 1.0 / (dim as f64).sqrt();
    let directions: Vec<Vec<f64>> = (0..=TOPICS)
        .map(|_| (0..dim).map(|_| world.normal() * scale).collect())
        .collect();
    let affinity: Vec<[f64; TOPICS]> = models
        .iter()
        .map(|m| {
            let mut a = [0.0; TOPICS];
            for (t, v) in a.iter_mut().enumerate() {
                *v = if m.name == "specialist" {
                    if t == 0 {
                        2.5
                    } else {
                        -0.5
                    }
                } else {
                    0.3 * world.normal()
                };
            }
            a
        })
        .collect();

    let records_path = dir.join("records.jsonl");
    let embeddings_path = dir.join("embeddings.jsonl");
    let pool_path = dir.join("pool.json");
    std::fs::write(&pool_path, pool_json(config.models, dim))?;
    let mut records = BufWriter::with_capacity(1 << 20, std::fs::File::create(&records_path)?);
    let mut embeddings = if config.inline_embeddings {
        None
    } else {
        Some(BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&embeddings_path)?,
        ))
    };
    let mut count = 0;
    let mut embedding_text = String::new();
    for q in config.first_query..config.first_query + config.queries {
        let mut rng = Rng::new(config.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (q as u64 + 1));
        let difficulty = 0.6 + 0.9 * rng.normal();
        let mut topic = [0.0; TOPICS];
        let mut total = 0.0;
        for t in topic.iter_mut() {
            *t = rng.uniform().powi(3);
            total += *t;
        }
        topic.iter_mut().for_each(|t| *t /= total);
        let input_tokens = 20 + (-150.0 * (1.0 - rng.uniform()).ln()) as u64;
        let split = if config.test_fraction <= 0.0 {
            ""
        } else if rng.uniform() < config.test_fraction {
            ",\"split\":\"test\""
        } else {
            ",\"split\":\"train\""
        };
        // The embedding, float32 like a real embedding model's.
        embedding_text.clear();
        embedding_text.push('[');
        for i in 0..dim {
            let mut v = difficulty * directions[0][i];
            for (z, direction) in topic.iter().zip(&directions[1..]) {
                v += 1.5 * z * direction[i];
            }
            v += 0.35 * scale * rng.normal();
            if i > 0 {
                embedding_text.push(',');
            }
            embedding_text.push_str(&(v as f32).to_string());
        }
        embedding_text.push(']');
        if let Some(out) = embeddings.as_mut() {
            writeln!(
                out,
                "{{\"id\":\"q{q}\",\"input_tokens\":{input_tokens},\"embedding\":{embedding_text}}}"
            )?;
        }
        let mut first = true;
        for (mi, model) in models.iter().enumerate() {
            let fit: f64 = affinity[mi].iter().zip(&topic).map(|(a, z)| a * z).sum();
            let p_full = sigmoid(1.5 * (model.skill + fit - difficulty));
            let natural =
                model.verbosity * (0.35 * rng.normal()).exp() * (1.0 + 0.25 * difficulty).max(0.3);
            let slots = config.budgets.iter().map(|&b| Some(b)).chain([None]);
            for budget in slots {
                let (p, tokens, budget_text) = match budget {
                    Some(b) => {
                        let b = f64::from(b);
                        let p = p_full * (1.0 - (-b / model.saturation).exp());
                        let tokens = if rng.uniform() < 0.1 {
                            b * (1.0 + 0.15 * rng.uniform())
                        } else {
                            natural.min(b) * (0.85 + 0.15 * rng.uniform())
                        };
                        (p, tokens, format!("{}", b as u32))
                    }
                    None => (p_full, natural, "\"unlimited\"".to_owned()),
                };
                let samples = config.score_samples.max(1);
                let hits = (0..samples).filter(|_| rng.uniform() < p).count();
                let score = hits as f64 / f64::from(samples);
                let tokens = tokens.round().max(1.0) as u64;
                write!(
                    records,
                    "{{\"query_id\":\"q{q}\",\"model\":\"{}\",\"budget\":{budget_text},\"score\":{score},\"output_tokens\":{tokens}{split}",
                    model.name
                )?;
                if first && config.inline_embeddings {
                    write!(
                        records,
                        ",\"input_tokens\":{input_tokens},\"embedding\":{embedding_text}"
                    )?;
                }
                first = false;
                records.write_all(b"}\n")?;
                count += 1;
            }
        }
    }
    records.flush()?;
    if let Some(mut out) = embeddings {
        out.flush()?;
    }
    Ok(SynthFiles {
        records: records_path,
        embeddings: (!config.inline_embeddings).then_some(embeddings_path),
        pool: pool_path,
        record_count: count,
    })
}
