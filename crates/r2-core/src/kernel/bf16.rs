//! The bfloat16 screen, for CPUs with AVX-512 BF16 (AMD Zen 4 and later, Intel Sapphire Rapids
//! and later): `vdpbf16ps` multiplies 32 pairs of bfloat16 and adds them into 16 float32 lanes, twice
//! the work of a float32 FMA per instruction, from half the bytes.
//!
//! The weights are rounded to bfloat16 once, when the router is built, and each query when it is
//! screened; both roundings are measured, not estimated: with `wb`, `xb` the rounded vectors,
//!
//! `|ŝ − w·x| ≤ γ·‖wb‖·‖xb‖ + ‖w − wb‖·‖x‖ + ‖wb‖·‖x − xb‖`
//!
//! (`w·x − wb·xb = (w − wb)·x + wb·(x − xb)` and Cauchy–Schwarz; `γ` bounds the float32 sum). The
//! router keeps `‖w − wb‖` per head ([`Bf16Screen::error`]) and gets `‖x − xb‖` from each call.
//! Values below bfloat16's normal range are rounded to zero here (the instruction would treat them
//! as zero anyway), so that the measured errors include them.
//!
//! Layout: panels of [`PANEL`] heads as in the float32 screen, but each row holds a pair of `k`
//! (`k = 2i` in the low half of a 32-bit word, `2i + 1` in the high half): `data[(p·pairs + i)·PANEL
//! + j]` for head `p·PANEL + j`. An odd `dim` is padded with a zero weight.

use super::screen::PANEL;
use super::QueryNorms;

/// Panels of the GEMV done together (4 panels × 2 accumulators = 8 chains).
const GROUP: usize = 4;

/// Queries per tile of the GEMM (2 panels × 12 queries = 24 accumulators of 32 registers).
const TILE: usize = 12;

/// bfloat16 bits of `v`: round to nearest even, values below the normal range to (signed) zero.
pub(crate) fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    if v.abs() < f32::MIN_POSITIVE {
        return (bits >> 16) as u16 & 0x8000;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The value of bfloat16 bits (exact).
pub(crate) fn bf16_value(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// The screen's weights in bfloat16.
#[derive(Debug, Clone)]
pub(crate) struct Bf16Screen {
    dim: usize,
    panels: usize,
    pairs: usize,
    data: Vec<u32>,
    error: Vec<f64>,
}

impl Bf16Screen {
    /// The bfloat16 screen of row-major `[heads, dim]` weights, or `None` when this CPU lacks
    /// AVX-512 BF16.
    pub(crate) fn new(coef: &[f32], dim: usize) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
            {
                return Some(Self::pack(coef, dim));
            }
        }
        let _ = (coef, dim);
        None
    }

    fn pack(coef: &[f32], dim: usize) -> Self {
        let heads = coef.len() / dim.max(1);
        let panels = heads.div_ceil(PANEL);
        let pairs = dim.div_ceil(2);
        let mut data = vec![0u32; panels * pairs * PANEL];
        let mut error = Vec::with_capacity(heads);
        for (h, row) in coef.chunks_exact(dim).enumerate() {
            let (p, j) = (h / PANEL, h % PANEL);
            let mut sq = 0.0f64;
            for (k, &w) in row.iter().enumerate() {
                let b = bf16_bits(w);
                data[(p * pairs + k / 2) * PANEL + j] |= u32::from(b) << (16 * (k % 2));
                let d = f64::from(w) - f64::from(bf16_value(b));
                sq += d * d;
            }
            // Rounded up: the float64 sum of squares and its root are off by a few ulps at most.
            error.push(sq.sqrt() * (1.0 + 1e-9));
        }
        Self {
            dim,
            panels,
            pairs,
            data,
            error,
        }
    }

    /// Heads rounded up to whole panels: the length of one query's output.
    pub(crate) fn padded_heads(&self) -> usize {
        self.panels * PANEL
    }

    /// Per head, `‖w − wb‖` rounded up.
    pub(crate) fn error(&self) -> &[f64] {
        &self.error
    }

    /// The screen of one query: `out[h] ≈ w[h]·x`, and the query's norms (`‖x − xb‖` rounded up).
    /// `x` is `dim` long, `out` [`Bf16Screen::padded_heads`]; `xb` is scratch.
    pub(crate) fn gemv(&self, x: &[f64], xb: &mut Vec<u32>, out: &mut [f32]) -> QueryNorms {
        assert!(x.len() == self.dim && out.len() == self.padded_heads());
        xb.clear();
        xb.resize(self.pairs, 0);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as below (AVX-512F); `xb` holds `pairs = ⌈dim / 2⌉` words.
        let norms = unsafe { x86::round_pairs(x, xb) };
        #[cfg(not(target_arch = "x86_64"))]
        let norms = round_pairs(x, xb);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Bf16Screen` is only built when the CPU has AVX-512F and AVX-512 BF16 (`new`);
        // the lengths were checked above.
        unsafe {
            x86::gemv(&self.data, self.pairs, self.panels, xb, out)
        };
        norms
    }

    /// The screen of `n = xs.len() / dim` queries (float64, row-major): `out[q·padded + h] ≈
    /// w[h]·x_q` and `norms[q]`, as [`Bf16Screen::gemv`]'s. `out` holds `n ×`
    /// [`Bf16Screen::padded_heads`] floats, `norms` `n`; `scratch` is reused between calls.
    /// `ahead` are the queries the caller screens next: while a tile is multiplied, the next one is
    /// fetched into the cache.
    pub(crate) fn gemm(
        &self,
        xs: &[f64],
        ahead: &[f64],
        out: &mut [f32],
        norms: &mut [QueryNorms],
        scratch: &mut Vec<u32>,
    ) {
        let dim = self.dim;
        let n = xs.len() / dim;
        let padded = self.padded_heads();
        assert!(xs.len() == n * dim && out.len() == n * padded && norms.len() == n);
        // One tile of queries at a time, in rows of pairs `stride` words apart, zeros past the end.
        let stride = tile_stride(self.pairs);
        let all = xs;
        for (t, ((xs, out), norms)) in all
            .chunks(TILE * dim)
            .zip(out.chunks_mut(TILE * padded))
            .zip(norms.chunks_mut(TILE))
            .enumerate()
        {
            let q_n = xs.len() / dim;
            let next = match all.get((t + 1) * TILE * dim..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => ahead,
            };
            let next = &next[..next.len().min(TILE * dim)];
            if q_n == 1 {
                // The GEMV: a tile would also compute `TILE - 1` queries of zeros.
                norms[0] = self.gemv(xs, scratch, out);
                continue;
            }
            scratch.resize(stride * TILE, 0);
            scratch[q_n * stride..].fill(0);
            for ((row, x), e) in scratch
                .chunks_exact_mut(stride)
                .zip(xs.chunks_exact(dim))
                .zip(norms.iter_mut())
            {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as in `gemv`; the row's first `pairs` words are `⌈dim / 2⌉`.
                {
                    *e = unsafe { x86::round_pairs(x, &mut row[..self.pairs]) };
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    *e = round_pairs(x, &mut row[..self.pairs]);
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `gemv`; `scratch` holds `TILE` rows of `stride ≥ pairs` words, `out`
            // room for `q_n ≤ TILE` rows of `padded` floats.
            unsafe {
                x86::gemm_tile(
                    &self.data,
                    self.pairs,
                    self.panels,
                    scratch,
                    stride,
                    q_n,
                    out,
                    next,
                )
            };
        }
    }
}

/// Words between the rows of a tile: `pairs` rounded up to 16, plus 16, so that the rows never lie
/// a multiple of 4 KiB apart (they would share L1 sets and evict each other).
fn tile_stride(pairs: usize) -> usize {
    pairs.next_multiple_of(16) + 16
}

/// Rounds `x` to bfloat16 pairs into `dst` (zeros past the end of `x`) and returns `‖x‖` and
/// `‖x − xb‖`, rounded up.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn round_pairs(x: &[f64], dst: &mut [u32]) -> QueryNorms {
    finish(round_pairs_from(x, dst, [0.0; 2]))
}

/// [`round_pairs`] of the values of `x` from pair `dst`'s first word on, adding their squares
/// and squared errors to `sq`; returns the sums.
fn round_pairs_from(x: &[f64], dst: &mut [u32], mut sq: [f64; 2]) -> [f64; 2] {
    let mut round = |v: f64| {
        let b = bf16_bits(v as f32);
        let d = v - f64::from(bf16_value(b));
        sq[0] += v * v;
        sq[1] += d * d;
        u32::from(b)
    };
    let (pairs, tail) = x.split_at(x.len() / 2 * 2);
    let mut slots = dst.iter_mut();
    for (pair, slot) in pairs.chunks_exact(2).zip(&mut slots) {
        *slot = round(pair[0]) | (round(pair[1]) << 16);
    }
    if let Some(&last) = tail.first() {
        if let Some(slot) = slots.next() {
            *slot = round(last);
        }
    }
    for slot in slots {
        *slot = 0;
    }
    sq
}

/// The norms from the sums of squares `[Σx², Σ(x − xb)²]`, the error rounded up. A NaN or infinity
/// in `x` makes both NaN or infinite, and the screen then gives up.
fn finish([norm, error]: [f64; 2]) -> QueryNorms {
    QueryNorms {
        norm: norm.sqrt(),
        rounding: error.sqrt() * (1.0 + 1e-9),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 BF16 kernels. Each requires AVX-512F and AVX-512 BF16 and the lengths its caller
    //! checks: `data.len() == panels·pairs·PANEL`, `xb.len() == pairs`, `out` room for every
    //! panel.
    // Register tiles are indexed by (panel, query): index loops say what each register holds.
    #![allow(clippy::needless_range_loop)]
    use super::{finish, round_pairs_from, QueryNorms, GROUP, PANEL, TILE};
    use std::arch::x86_64::*;

    /// Float64 values per cache line.
    const LINE: usize = 64 / std::mem::size_of::<f64>();

    /// [`super::round_pairs`], 16 values at a time: the same words (round to nearest even,
    /// subnormals to signed zero, NaN quieted) and the same error up to the order of its sum.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `dst.len() == ⌈x.len() / 2⌉`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn round_pairs(x: &[f64], dst: &mut [u32]) -> QueryNorms {
        debug_assert_eq!(dst.len(), x.len().div_ceil(2));
        let chunks = x.len() / 16;
        let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
        let min_positive = _mm512_set1_epi32(f32::MIN_POSITIVE.to_bits() as i32);
        let infinity = _mm512_set1_epi32(f32::INFINITY.to_bits() as i32);
        let (one, half_up, sign, quiet) = (
            _mm512_set1_epi32(1),
            _mm512_set1_epi32(0x7fff),
            _mm512_set1_epi32(0x8000),
            _mm512_set1_epi32(0x40),
        );
        let (mut sq, mut norm) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        for c in 0..chunks {
            let p = x.as_ptr().add(16 * c);
            let (d0, d1) = (_mm512_loadu_pd(p), _mm512_loadu_pd(p.add(8)));
            let f0 = _mm256_castps_si256(_mm512_cvtpd_ps(d0));
            let f1 = _mm256_castps_si256(_mm512_cvtpd_ps(d1));
            let bits = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(f0), f1);
            let high = _mm512_srli_epi32::<16>(bits);
            let round = _mm512_add_epi32(half_up, _mm512_and_si512(high, one));
            let mut r = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, round));
            let abs = _mm512_and_si512(bits, abs_mask);
            let tiny = _mm512_cmplt_epu32_mask(abs, min_positive);
            r = _mm512_mask_blend_epi32(tiny, r, _mm512_and_si512(high, sign));
            let nan = _mm512_cmpgt_epu32_mask(abs, infinity);
            r = _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(high, quiet));
            // Sixteen 16-bit values in order: value 2i in the low half of word i.
            _mm256_storeu_si256(dst.as_mut_ptr().add(8 * c).cast(), _mm512_cvtepi32_epi16(r));
            let values = _mm512_slli_epi32::<16>(r);
            let v0 = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_castsi512_si256(values)));
            let v1 = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_extracti64x4_epi64::<1>(values)));
            let (e0, e1) = (_mm512_sub_pd(d0, v0), _mm512_sub_pd(d1, v1));
            sq = _mm512_fmadd_pd(e0, e0, _mm512_fmadd_pd(e1, e1, sq));
            norm = _mm512_fmadd_pd(d0, d0, _mm512_fmadd_pd(d1, d1, norm));
        }
        let sq = round_pairs_from(
            &x[16 * chunks..],
            &mut dst[8 * chunks..],
            [_mm512_reduce_add_pd(norm), _mm512_reduce_add_pd(sq)],
        );
        finish(sq)
    }

    #[inline(always)]
    unsafe fn load(p: *const u32) -> __m512bh {
        // SAFETY (caller): 16 words readable at p. A bit-for-bit reinterpretation.
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()))
    }

    #[inline(always)]
    unsafe fn splat(v: u32) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(v as i32))
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemv(
        data: &[u32],
        pairs: usize,
        panels: usize,
        xb: &[u32],
        out: &mut [f32],
    ) {
        debug_assert!(data.len() == panels * pairs * PANEL && xb.len() == pairs);
        debug_assert!(out.len() == panels * PANEL);
        let mut p = 0;
        while p < panels {
            let g = (panels - p).min(GROUP);
            match g {
                4 => gemv_group::<4>(data, pairs, p, xb, out),
                3 => gemv_group::<3>(data, pairs, p, xb, out),
                2 => gemv_group::<2>(data, pairs, p, xb, out),
                _ => gemv_group::<1>(data, pairs, p, xb, out),
            }
            p += g;
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn gemv_group<const G: usize>(
        data: &[u32],
        pairs: usize,
        first: usize,
        xb: &[u32],
        out: &mut [f32],
    ) {
        let w = data.as_ptr().add(first * pairs * PANEL);
        let mut even = [_mm512_setzero_ps(); G];
        let mut odd = [_mm512_setzero_ps(); G];
        let mut i = 0;
        while i + 2 <= pairs {
            let (x0, x1) = (splat(*xb.get_unchecked(i)), splat(*xb.get_unchecked(i + 1)));
            for g in 0..G {
                // SAFETY: panel first + g, pair rows i and i + 1 < pairs.
                let row = w.add((g * pairs + i) * PANEL);
                even[g] = _mm512_dpbf16_ps(even[g], load(row), x0);
                odd[g] = _mm512_dpbf16_ps(odd[g], load(row.add(PANEL)), x1);
            }
            i += 2;
        }
        if i < pairs {
            let x0 = splat(*xb.get_unchecked(i));
            for g in 0..G {
                let row = w.add((g * pairs + i) * PANEL);
                even[g] = _mm512_dpbf16_ps(even[g], load(row), x0);
            }
        }
        for g in 0..G {
            // SAFETY: out holds every panel's PANEL floats.
            _mm512_storeu_ps(
                out.as_mut_ptr().add((first + g) * PANEL),
                _mm512_add_ps(even[g], odd[g]),
            );
        }
    }

    /// One tile of `TILE` queries (`q_n` of them real) against every panel, two panels at a
    /// time: 24 accumulators, one chain per (head, query) over all pairs. Meanwhile the float64
    /// rows of `next` are prefetched a line per pair, so the next tile's rounding finds them in
    /// cache instead of waiting on memory.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm_tile(
        data: &[u32],
        pairs: usize,
        panels: usize,
        xr: &[u32],
        stride: usize,
        q_n: usize,
        out: &mut [f32],
        next: &[f64],
    ) {
        debug_assert!(data.len() == panels * pairs * PANEL);
        debug_assert!(xr.len() == stride * TILE && stride >= pairs && q_n <= TILE);
        debug_assert!(out.len() >= q_n * panels * PANEL);
        // The cache lines of `next`, shared out among the blocks of panels.
        let lines = next.len().div_ceil(LINE);
        let per_block = lines.div_ceil(panels.div_ceil(2));
        let fetch = |first: usize| {
            let start = (first / 2 * per_block).min(lines);
            let count = per_block.min(lines - start);
            (next.as_ptr().wrapping_add(start * LINE), count)
        };
        let mut p = 0;
        while p < panels {
            let ahead = fetch(p);
            if p + 2 <= panels {
                gemm_block::<2>(data, pairs, panels, p, xr, stride, q_n, out, ahead);
                p += 2;
            } else {
                gemm_block::<1>(data, pairs, panels, p, xr, stride, q_n, out, ahead);
                p += 1;
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_block<const G: usize>(
        data: &[u32],
        pairs: usize,
        panels: usize,
        first: usize,
        xr: &[u32],
        stride: usize,
        q_n: usize,
        out: &mut [f32],
        (ahead, lines): (*const f64, usize),
    ) {
        let w = data.as_ptr().add(first * pairs * PANEL);
        let x = xr.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); TILE]; G];
        for i in 0..pairs {
            if i < lines {
                // A hint: a prefetch never faults, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(LINE * i).cast());
            }
            let mut wv = [splat(0); G];
            for g in 0..G {
                // SAFETY: panel first + g, pair row i < pairs.
                wv[g] = load(w.add((g * pairs + i) * PANEL));
            }
            for q in 0..TILE {
                // SAFETY: xr holds TILE rows of stride ≥ pairs words.
                let xq = splat(*x.add(q * stride + i));
                for g in 0..G {
                    acc[g][q] = _mm512_dpbf16_ps(acc[g][q], wv[g], xq);
                }
            }
        }
        let padded = panels * PANEL;
        for q in 0..q_n {
            for g in 0..G {
                // SAFETY: out holds q_n rows of `padded` floats; panel first + g < panels.
                _mm512_storeu_ps(
                    out.as_mut_ptr().add(q * padded + (first + g) * PANEL),
                    acc[g][q],
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_and_flushes_subnormals() {
        assert_eq!(bf16_value(bf16_bits(1.0)), 1.0);
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.0 / 256.0)), 1.0); // tie, to even
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0); // tie, to even
        assert_eq!(
            bf16_value(bf16_bits(-1.0 - 1.0 / 200.0)),
            -1.0 - 1.0 / 128.0
        );
        assert_eq!(bf16_value(bf16_bits(1e-39)), 0.0);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        for i in 0..10_000 {
            let v = ((i as f32) * 0.618).sin() * 10f32.powi(i % 30 - 15);
            let r = bf16_value(bf16_bits(v));
            assert!((r - v).abs() <= v.abs() / 256.0, "{v} → {r}");
        }
    }

    #[test]
    fn the_vector_rounding_gives_the_words_and_error_of_the_scalar_one() {
        let special = [
            0.0,
            -0.0,
            1e-39,
            -1e-39,
            f64::from(f32::MIN_POSITIVE),
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            f64::from(f32::MAX),
            1e39,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for len in [0usize, 1, 2, 15, 16, 17, 31, 32, 33, 100, 1024] {
            for with_special in [false, true] {
                let mut x: Vec<f64> = (0..len)
                    .map(|i| ((i as f64) * 0.618).sin() * 10f64.powi(i as i32 % 20 - 10))
                    .collect();
                if with_special {
                    for (v, s) in x.iter_mut().zip(special.iter().cycle()) {
                        *v = *s;
                    }
                }
                let mut scalar = vec![0u32; len.div_ceil(2)];
                let expected = round_pairs(&x, &mut scalar);
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512f") {
                    let mut vector = vec![u32::MAX; len.div_ceil(2)];
                    // SAFETY: AVX-512F was detected; the lengths match.
                    let got = unsafe { x86::round_pairs(&x, &mut vector) };
                    // NaN payloads may differ; every other word is the same.
                    for (i, (a, b)) in vector.iter().zip(&scalar).enumerate() {
                        let nan =
                            |w: u32| [w & 0xffff, w >> 16].map(|h| bf16_value(h as u16).is_nan());
                        assert!(
                            a == b || nan(*a) == nan(*b) && nan(*a).contains(&true),
                            "{len} [{i}]"
                        );
                    }
                    for (got, expected) in
                        [(got.norm, expected.norm), (got.rounding, expected.rounding)]
                    {
                        if expected.is_finite() {
                            assert!(
                                (got - expected).abs() <= 1e-12 * expected,
                                "{got} vs {expected}"
                            );
                        } else {
                            assert!(!got.is_finite());
                        }
                    }
                    if !with_special {
                        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                        assert!((got.norm - norm).abs() <= 1e-12 * norm, "{len}");
                    }
                }
            }
        }
    }

    /// Every head value within the bound of the module's documentation, for every tail of `dim`
    /// (odd dims pad a pair) and of the heads (partial panels and groups of panels).
    #[test]
    fn the_kernels_are_within_their_bound_for_every_tail() {
        for dim in [1, 2, 3, 5, 16, 17, 33, 64, 131] {
            for heads in [1, 15, 16, 17, 33, 47, 64, 65, 79] {
                let coef: Vec<f32> = (0..heads * dim)
                    .map(|i| ((i as f32) * 0.731).sin() * (1.0 + (i % 7) as f32))
                    .collect();
                let Some(screen) = Bf16Screen::new(&coef, dim) else {
                    return; // no AVX-512 BF16 on this CPU
                };
                let padded = screen.padded_heads();
                for n in [1, 3, 12, 13, 25] {
                    let xs: Vec<f64> = (0..n * dim).map(|i| ((i as f64) * 0.37).cos()).collect();
                    let mut all = vec![f32::NAN; n * padded];
                    let mut all_norms = vec![QueryNorms::default(); n];
                    screen.gemm(&xs, &[], &mut all, &mut all_norms, &mut Vec::new());
                    for (q, x) in xs.chunks_exact(dim).enumerate() {
                        let mut one = vec![f32::NAN; padded];
                        let norms = screen.gemv(x, &mut Vec::new(), &mut one);
                        assert_eq!(norms, all_norms[q], "dim {dim} n {n} q {q}");
                        let ex = norms.rounding;
                        let tiled = &all[q * padded..(q + 1) * padded];
                        let x_norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                        for (h, w) in coef.chunks_exact(dim).enumerate() {
                            let exact: f64 = w.iter().zip(x).map(|(&a, b)| f64::from(a) * b).sum();
                            let w_norm =
                                w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                            let d = screen.error()[h];
                            let n = dim as f64 + 2.0;
                            let u = f64::from(f32::EPSILON) / 2.0;
                            let gamma = n * u / (1.0 - n * u);
                            let bound = gamma * (w_norm + d) * (x_norm + ex)
                                + d * x_norm
                                + (w_norm + d) * ex
                                + 1e-30;
                            for (kernel, got) in [("gemv", one[h]), ("gemm", tiled[h])] {
                                let err = (f64::from(got) - exact).abs();
                                assert!(
                                    err <= bound,
                                    "{kernel} dim {dim} heads {heads} n {n} q {q} h {h}: {got} vs {exact} (bound {bound})"
                                );
                            }
                        }
                        // Padding heads are zero.
                        assert!(one[heads..].iter().all(|&v| v == 0.0));
                        assert!(tiled[heads..].iter().all(|&v| v == 0.0));
                    }
                }
            }
        }
    }
}
