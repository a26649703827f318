//! Causal grouped-query attention over a left-padded batch, one query row at a time.
//!
//! A row attends only to the real keys at or before it (a padding row to itself alone, so every
//! softmax is finite), in increasing key order, with the same arithmetic whatever else is in the
//! batch: a text gets bit-identical attention alone or padded among longer ones. No mask or score
//! matrix is materialised; a row needs one scratch row of scores. Rows are shared over rayon,
//! and the loops are compiled for AVX-512 where the CPU has it (the same operations in the same
//! order, so the results do not depend on the CPU).

use rayon::prelude::*;

/// Keys whose scores are summed together in one register (float32 lanes of AVX-512).
const LANES: usize = 16;

/// The length of a row of transposed keys: `len` rounded up to whole [`LANES`] (the padding is 0).
pub(crate) fn key_row_len(len: usize) -> usize {
    len.next_multiple_of(LANES)
}

/// The shapes of one attention step.
pub(crate) struct Heads<'a> {
    pub batch: usize,
    /// Keys (and values) per sequence, padding included.
    pub len: usize,
    /// The first query row of each sequence (the rows before it are not computed).
    pub first_row: usize,
    /// Padding keys in front of each sequence.
    pub pads: &'a [usize],
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Heads<'_> {
    fn query_rows(&self) -> usize {
        self.len - self.first_row
    }
}

/// `softmax(q · kᵀ) · v` per head: `q` is `[batch, heads, len − first_row, head_dim]` (scaled
/// already), `k_t` is `[batch, kv_heads, head_dim, key_row_len(len)]` (the keys transposed, so
/// the scores of [`LANES`] keys are summed in one register, one query element at a time) and `v` is
/// `[batch, kv_heads, len, head_dim]`; query head `h` uses key/value head `h / (heads / kv_heads)`.
/// Returns `[batch × (len − first_row), heads × head_dim]`, the layout the output projection takes.
pub(crate) fn attention(shape: &Heads<'_>, q: &[f32], k_t: &[f32], v: &[f32]) -> Vec<f32> {
    attention_with(shape, q, k_t, v, avx512_available())
}

fn attention_with(shape: &Heads<'_>, q: &[f32], k_t: &[f32], v: &[f32], avx512: bool) -> Vec<f32> {
    let (tq, d) = (shape.query_rows(), shape.head_dim);
    let width = shape.heads * d;
    debug_assert_eq!(q.len(), shape.batch * shape.heads * tq * d);
    debug_assert_eq!(
        k_t.len(),
        shape.batch * shape.kv_heads * key_row_len(shape.len) * d
    );
    debug_assert_eq!(v.len(), shape.batch * shape.kv_heads * shape.len * d);
    let mut out = vec![0f32; shape.batch * tq * width];
    out.par_chunks_mut(width).enumerate().for_each_init(
        || vec![0f32; key_row_len(shape.len)],
        |scores, (row, out)| {
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { avx512::attend(shape, q, k_t, v, row, scores, out) };
            }
            let _ = avx512;
            attend(shape, q, k_t, v, row, scores, out)
        },
    );
    out
}

fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Heads;

    /// [`super::attend`] compiled for AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attend(
        shape: &Heads<'_>,
        q: &[f32],
        k_t: &[f32],
        v: &[f32],
        row: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        super::attend(shape, q, k_t, v, row, scores, out)
    }
}

/// Output row `row` (sequence `row / (len − first_row)`) of every head into `out`.
#[inline(always)]
fn attend(
    shape: &Heads<'_>,
    q: &[f32],
    k_t: &[f32],
    v: &[f32],
    row: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (t, tq, d) = (shape.len, shape.query_rows(), shape.head_dim);
    let (seq, r) = (row / tq, row % tq);
    let i = shape.first_row + r;
    let pad = shape.pads[seq];
    // The real keys up to and including this row; a padding row sees itself only.
    let keys = if i >= pad { pad..i + 1 } else { i..i + 1 };
    let group = shape.heads / shape.kv_heads;
    for (head, out) in out.chunks_exact_mut(d).enumerate() {
        let kv = seq * shape.kv_heads + head / group;
        let query = &q[((seq * shape.heads + head) * tq + r) * d..][..d];
        let value = |j: usize| &v[(kv * t + j) * d..][..d];
        let heads_k_t = &k_t[kv * d * key_row_len(t)..][..d * key_row_len(t)];
        // Whole registers of keys around the visible ones; each key's sum is the same wherever its
        // register starts.
        let row_len = key_row_len(t);
        let mut j0 = keys.start / LANES * LANES;
        while j0 < keys.end {
            let registers = (keys.end - j0).div_ceil(LANES);
            j0 += LANES
                * match registers {
                    1 => scores_of::<1>(query, heads_k_t, row_len, j0, scores),
                    2 => scores_of::<2>(query, heads_k_t, row_len, j0, scores),
                    3 => scores_of::<3>(query, heads_k_t, row_len, j0, scores),
                    _ => scores_of::<4>(query, heads_k_t, row_len, j0, scores),
                };
        }
        let scores = &mut scores[keys.clone()];
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        // Two keys per pass over the output, added in key order.
        let mut pairs = scores.chunks_exact(2);
        let mut j = keys.start;
        for p in &mut pairs {
            for ((o, &a), &b) in out.iter_mut().zip(value(j)).zip(value(j + 1)) {
                *o = *o + p[0] * a + p[1] * b;
            }
            j += 2;
        }
        if let [p] = pairs.remainder() {
            for (o, &a) in out.iter_mut().zip(value(j)) {
                *o += p * a;
            }
        }
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

/// The scores `query · k` of keys `j0..j0 + N·LANES` into `scores`, from the keys of one head
/// transposed (`k_t[c · row_len + j]`); returns `N`. Each key sums the even and the odd query
/// elements apart (two independent chains of additions), then adds the two.
#[inline(always)]
fn scores_of<const N: usize>(
    query: &[f32],
    k_t: &[f32],
    row_len: usize,
    j0: usize,
    scores: &mut [f32],
) -> usize {
    let mut even = [[0f32; LANES]; N];
    let mut odd = [[0f32; LANES]; N];
    let keys = |c: usize| &k_t[c * row_len + j0..][..N * LANES];
    let add = |acc: &mut [[f32; LANES]; N], qc: f32, keys: &[f32]| {
        for (acc, keys) in acc.iter_mut().zip(keys.chunks_exact(LANES)) {
            for (a, &k) in acc.iter_mut().zip(keys) {
                *a += qc * k;
            }
        }
    };
    let mut pairs = query.chunks_exact(2);
    let mut c = 0;
    for q in &mut pairs {
        add(&mut even, q[0], keys(c));
        add(&mut odd, q[1], keys(c + 1));
        c += 2;
    }
    if let [q] = pairs.remainder() {
        add(&mut even, *q, keys(c));
    }
    for ((out, even), odd) in scores[j0..j0 + N * LANES]
        .chunks_exact_mut(LANES)
        .zip(&even)
        .zip(&odd)
    {
        for ((s, e), o) in out.iter_mut().zip(even).zip(odd) {
            *s = e + o;
        }
    }
    N
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;

    /// `[heads, len, d]` as `[heads, d, key_row_len(len)]`.
    fn transposed(k: &[f32], heads: usize, len: usize, d: usize) -> Vec<f32> {
        let row = key_row_len(len);
        let mut out = vec![0.0; heads * row * d];
        for h in 0..heads {
            for j in 0..len {
                for c in 0..d {
                    out[(h * d + c) * row + j] = k[(h * len + j) * d + c];
                }
            }
        }
        out
    }

    /// Masked softmax attention in float64, written out as the definition.
    fn reference(shape: &Heads<'_>, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let (t, tq, d) = (shape.len, shape.query_rows(), shape.head_dim);
        let group = shape.heads / shape.kv_heads;
        let mut out = Vec::new();
        for seq in 0..shape.batch {
            for r in 0..tq {
                let i = shape.first_row + r;
                let pad = shape.pads[seq];
                for head in 0..shape.heads {
                    let kv = seq * shape.kv_heads + head / group;
                    let qr = &q[((seq * shape.heads + head) * tq + r) * d..][..d];
                    let visible = |j: usize| if i >= pad { j >= pad && j <= i } else { j == i };
                    let scores: Vec<f64> = (0..t)
                        .map(|j| {
                            if !visible(j) {
                                return f64::NEG_INFINITY;
                            }
                            let kr = &k[(kv * t + j) * d..][..d];
                            qr.iter().zip(kr).map(|(a, b)| *a as f64 * *b as f64).sum()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        let o: f64 = (0..t).map(|j| e[j] * v[(kv * t + j) * d + c] as f64).sum();
                        out.push((o / sum) as f32);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn rows_attend_to_their_real_keys_as_the_masked_softmax_does() {
        let pads = [0, 3, 6];
        for (first_row, head_dim) in [(0, 32), (6, 32), (0, 20), (8, 7)] {
            let shape = Heads {
                batch: 3,
                len: 9,
                first_row,
                pads: &pads,
                heads: 4,
                kv_heads: 2,
                head_dim,
            };
            let tq = shape.query_rows();
            let q = values(3 * 4 * tq * head_dim, 1);
            let k = values(3 * 2 * 9 * head_dim, 2);
            let v = values(3 * 2 * 9 * head_dim, 3);
            let got = attention(&shape, &q, &transposed(&k, 3 * 2, 9, head_dim), &v);
            let want = reference(&shape, &q, &k, &v);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5,
                    "{g} against {w} (first row {first_row})"
                );
            }
        }
    }

    #[test]
    fn the_avx512_and_portable_builds_give_the_same_bits() {
        let pads = [0, 5];
        let shape = Heads {
            batch: 2,
            len: 70,
            first_row: 0,
            pads: &pads,
            heads: 4,
            kv_heads: 2,
            head_dim: 33,
        };
        let q = values(2 * 4 * 70 * 33, 7);
        let k = transposed(&values(2 * 2 * 70 * 33, 8), 2 * 2, 70, 33);
        let v = values(2 * 2 * 70 * 33, 9);
        let portable = attention_with(&shape, &q, &k, &v, false);
        let avx512 = attention_with(&shape, &q, &k, &v, avx512_available());
        assert!(portable
            .iter()
            .zip(&avx512)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn a_text_gets_the_same_attention_alone_and_padded_in_a_batch() {
        let d = 24;
        let (q_long, k_long, v_long) = (values(2 * 8 * d, 4), values(8 * d, 5), values(8 * d, 6));
        let short = 5;
        // The short text alone (1 sequence, 2 heads, 1 key/value head, 5 tokens).
        let alone = Heads {
            batch: 1,
            len: short,
            first_row: 0,
            pads: &[0],
            heads: 2,
            kv_heads: 1,
            head_dim: d,
        };
        let q_short: Vec<f32> = (0..2)
            .flat_map(|h| q_long[(h * 8 + 3) * d..(h * 8 + 8) * d].to_vec())
            .collect();
        let (k_short, v_short) = (&k_long[3 * d..], &v_long[3 * d..]);
        let single = attention(&alone, &q_short, &transposed(k_short, 1, short, d), v_short);
        // The same values as rows 3..8 of a sequence with 3 padding tokens in front.
        let padded = Heads {
            batch: 1,
            len: 8,
            first_row: 0,
            pads: &[3],
            heads: 2,
            kv_heads: 1,
            head_dim: d,
        };
        let batched = attention(&padded, &q_long, &transposed(&k_long, 1, 8, d), &v_long);
        assert_eq!(&batched[3 * 2 * d..], &single[..]);
    }
}
