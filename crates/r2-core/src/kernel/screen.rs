//! The float32 screen: every head times one query (GEMV) or a block of queries (GEMM).
//!
//! The weights are packed once, when the router is built, into panels of [`PANEL`] heads stored
//! k-major (`panel[k][j]` is weight `k` of head `panel·PANEL + j`; heads past the last are zero),
//! so one AVX-512 load holds weight `k` of sixteen heads and the kernels stream through memory.
//!
//! Every head value is a sum of `dim` products accumulated in float32 in some order (each kernel
//! has its own); the screen's error bound `γ_n·Σ|w·x|` holds for every summation order, so the
//! kernels need not agree with one another bit for bit, only stay within that bound, which the
//! tests check for every kernel and every tail length. The choice of kernel is made once per
//! [`Packed`] (when the router is built) from the CPU's features.

use super::QueryNorms;

/// Heads per panel: one AVX-512 register of float32.
pub(crate) const PANEL: usize = 16;

/// Queries per tile of the AVX-512 GEMM (2 panels × 12 queries = 24 accumulators of 32 registers).
const TILE_512: usize = 12;
/// Queries per tile of the AVX2 GEMM (1 panel = 2 registers × 6 queries = 12 accumulators of 16).
const TILE_256: usize = 6;

/// Which instruction set the screen kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The best kernel this CPU runs.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }

    /// Every kernel this CPU runs (for the tests).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Isa::Avx2Fma);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Isa::Avx512);
            }
        }
        all
    }
}

/// The screen's weights, packed into panels.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    dim: usize,
    panels: usize,
    isa: Isa,
    /// `panels × dim × PANEL` floats.
    data: Vec<f32>,
}

impl Packed {
    /// Packs row-major `[heads, dim]` weights for the best kernel of this CPU.
    pub(crate) fn new(coef: &[f32], dim: usize) -> Self {
        Self::with_isa(coef, dim, Isa::detect())
    }

    pub(crate) fn with_isa(coef: &[f32], dim: usize, isa: Isa) -> Self {
        let heads = coef.len() / dim.max(1);
        let panels = heads.div_ceil(PANEL);
        let mut data = vec![0.0f32; panels * dim * PANEL];
        for (h, row) in coef.chunks_exact(dim).enumerate() {
            let (p, j) = (h / PANEL, h % PANEL);
            let panel = &mut data[p * dim * PANEL..(p + 1) * dim * PANEL];
            for (k, &w) in row.iter().enumerate() {
                panel[k * PANEL + j] = w;
            }
        }
        Self {
            dim,
            panels,
            isa,
            data,
        }
    }

    /// Heads rounded up to whole panels: the length of one query's output.
    pub(crate) fn padded_heads(&self) -> usize {
        self.panels * PANEL
    }

    /// `out[h] = Σ_k w[h][k]·x[k]` for every (padded) head. Lengths: `x` is `dim`, `out` is
    /// [`Packed::padded_heads`]; anything else is a bug of the caller (checked, then a panic).
    pub(crate) fn gemv(&self, x: &[f32], out: &mut [f32]) {
        assert!(x.len() == self.dim && out.len() == self.padded_heads());
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` is Avx512 only when the CPU has AVX-512F (`Isa::detect`/`available`);
            // the lengths were just checked.
            Isa::Avx512 => unsafe { x86::gemv_avx512(&self.data, self.dim, self.panels, x, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX2 and FMA.
            Isa::Avx2Fma => unsafe { x86::gemv_avx2(&self.data, self.dim, self.panels, x, out) },
            Isa::Portable => gemv_portable(&self.data, self.dim, self.panels, x, out),
        }
    }

    /// The screen of `n = xs.len() / dim` queries (float64, row-major, converted to float32 here):
    /// `out[q·padded + h]` for query `q`, head `h`, and `norms[q]`. `out` must hold `n ×`
    /// [`Packed::padded_heads`] floats, `norms` `n`; `scratch` is reused between calls.
    pub(crate) fn gemm(
        &self,
        xs: &[f64],
        out: &mut [f32],
        norms: &mut [QueryNorms],
        scratch: &mut Vec<f32>,
    ) {
        let dim = self.dim;
        let n = xs.len() / dim;
        let padded = self.padded_heads();
        assert!(xs.len() == n * dim && out.len() == n * padded && norms.len() == n);
        let tile = match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => TILE_512,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => TILE_256,
            Isa::Portable => {
                scratch.clear();
                scratch.resize(dim, 0.0);
                for ((x, o), norms) in xs
                    .chunks_exact(dim)
                    .zip(out.chunks_exact_mut(padded))
                    .zip(norms.iter_mut())
                {
                    *norms = narrow(x, scratch);
                    gemv_portable(&self.data, dim, self.panels, scratch, o);
                }
                return;
            }
        };
        // One tile of queries at a time, in float32 rows `stride` apart, zeros past the end.
        let stride = tile_stride(dim);
        for ((xs, out), norms) in xs
            .chunks(tile * dim)
            .zip(out.chunks_mut(tile * padded))
            .zip(norms.chunks_mut(tile))
        {
            let q_n = xs.len() / dim;
            if q_n == 1 {
                // The GEMV: a tile would also compute `tile - 1` queries of zeros.
                scratch.resize(dim, 0.0);
                norms[0] = narrow(xs, &mut scratch[..dim]);
                self.gemv(&scratch[..dim], out);
                continue;
            }
            scratch.resize(stride * tile, 0.0);
            narrow_rows(xs, dim, stride, tile, scratch, norms);
            match self.isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F (see `gemv`); `scratch` holds `TILE_512` rows of
                // `stride ≥ dim` floats, `out` room for `q_n ≤ TILE_512` rows of `padded`.
                Isa::Avx512 => unsafe {
                    x86::gemm_tile_avx512(&self.data, dim, self.panels, scratch, stride, q_n, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX2 and FMA with `TILE_256`.
                Isa::Avx2Fma => unsafe {
                    x86::gemm_tile_avx2(&self.data, dim, self.panels, scratch, stride, q_n, out)
                },
                Isa::Portable => unreachable!("handled above"),
            }
        }
    }
}

/// Floats between the rows of a tile: `dim` rounded up to 16, plus 16, so that the rows of a tile
/// never lie a multiple of 4 KiB apart (they would share L1 sets and evict each other).
fn tile_stride(dim: usize) -> usize {
    dim.next_multiple_of(16) + 16
}

/// `xr[q·stride + k] = xs[q·dim + k] as f32` and `norms[q]` for the `q_n = xs.len() / dim ≤ tile`
/// queries of `xs`, zeros for `q_n ≤ q < tile`.
fn narrow_rows(
    xs: &[f64],
    dim: usize,
    stride: usize,
    tile: usize,
    xr: &mut [f32],
    norms: &mut [QueryNorms],
) {
    let q_n = xs.len() / dim;
    assert!(q_n <= tile && stride >= dim && xr.len() == stride * tile && xs.len() == q_n * dim);
    if q_n < tile {
        xr[q_n * stride..].fill(0.0);
    }
    for ((row, x), norms) in xr
        .chunks_exact_mut(stride)
        .zip(xs.chunks_exact(dim))
        .zip(norms.iter_mut())
    {
        *norms = narrow(x, &mut row[..dim]);
    }
}

/// `xr[k] = x[k] as f32`, and the norms of `x` (the float32 screen has no rounding term).
#[inline]
fn narrow(x: &[f64], xr: &mut [f32]) -> QueryNorms {
    const LANES: usize = 8;
    let mut sq = [0.0f64; LANES];
    let full = x.len() / LANES * LANES;
    let ((x, tail), (xr, row_tail)) = (x.split_at(full), xr.split_at_mut(full));
    for (c, r) in x.chunks_exact(LANES).zip(xr.chunks_exact_mut(LANES)) {
        for i in 0..LANES {
            r[i] = c[i] as f32;
            sq[i] += c[i] * c[i];
        }
    }
    let mut total: f64 = sq.iter().sum();
    for (r, &v) in row_tail.iter_mut().zip(tail) {
        *r = v as f32;
        total += v * v;
    }
    QueryNorms {
        norm: total.sqrt(),
        rounding: 0.0,
    }
}

/// The portable GEMV: per panel, sixteen float32 accumulators the compiler can keep in vectors.
fn gemv_portable(data: &[f32], dim: usize, panels: usize, x: &[f32], out: &mut [f32]) {
    for (panel, o) in data
        .chunks_exact(dim * PANEL)
        .zip(out.chunks_exact_mut(PANEL))
        .take(panels)
    {
        let mut acc = [0.0f32; PANEL];
        for (w, &xk) in panel.chunks_exact(PANEL).zip(x) {
            for j in 0..PANEL {
                acc[j] += w[j] * xk;
            }
        }
        o.copy_from_slice(&acc);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 and AVX2+FMA kernels. Every function here requires the CPU features in its
    //! `target_feature` attribute and the lengths its caller (`Packed`) checks:
    //! `data.len() == panels·dim·PANEL`, `x.len() == dim` (GEMV) or `xr.len() == stride·tile`
    //! (GEMM), `out` room for every panel of every written query.
    // Register tiles are indexed by (panel, query): index loops say what each register holds.
    #![allow(clippy::needless_range_loop)]
    use super::{PANEL, TILE_256, TILE_512};
    use std::arch::x86_64::*;

    /// Panels of the AVX-512 GEMV done together: 4 panels × 2 accumulators = 8 independent chains,
    /// enough to cover the FMA latency.
    const GROUP: usize = 4;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemv_avx512(
        data: &[f32],
        dim: usize,
        panels: usize,
        x: &[f32],
        out: &mut [f32],
    ) {
        debug_assert!(data.len() == panels * dim * PANEL && x.len() == dim);
        debug_assert!(out.len() == panels * PANEL);
        let mut p = 0;
        while p < panels {
            let g = (panels - p).min(GROUP);
            // SAFETY (all four): panels p..p + g exist; see the module's contract.
            match g {
                4 => gemv_group_avx512::<4>(data, dim, p, x, out),
                3 => gemv_group_avx512::<3>(data, dim, p, x, out),
                2 => gemv_group_avx512::<2>(data, dim, p, x, out),
                _ => gemv_group_avx512::<1>(data, dim, p, x, out),
            }
            p += g;
        }
    }

    /// Panels `first..first + G`: accumulators for even and odd `k`, added at the end.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn gemv_group_avx512<const G: usize>(
        data: &[f32],
        dim: usize,
        first: usize,
        x: &[f32],
        out: &mut [f32],
    ) {
        let w = data.as_ptr().add(first * dim * PANEL);
        let mut even = [_mm512_setzero_ps(); G];
        let mut odd = [_mm512_setzero_ps(); G];
        let mut k = 0;
        while k + 2 <= dim {
            let (x0, x1) = (
                _mm512_set1_ps(*x.get_unchecked(k)),
                _mm512_set1_ps(*x.get_unchecked(k + 1)),
            );
            for g in 0..G {
                // SAFETY: panel first + g, rows k and k + 1 < dim.
                let row = w.add((g * dim + k) * PANEL);
                even[g] = _mm512_fmadd_ps(_mm512_loadu_ps(row), x0, even[g]);
                odd[g] = _mm512_fmadd_ps(_mm512_loadu_ps(row.add(PANEL)), x1, odd[g]);
            }
            k += 2;
        }
        if k < dim {
            let x0 = _mm512_set1_ps(*x.get_unchecked(k));
            for g in 0..G {
                let row = w.add((g * dim + k) * PANEL);
                even[g] = _mm512_fmadd_ps(_mm512_loadu_ps(row), x0, even[g]);
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

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemv_avx2(
        data: &[f32],
        dim: usize,
        panels: usize,
        x: &[f32],
        out: &mut [f32],
    ) {
        debug_assert!(data.len() == panels * dim * PANEL && x.len() == dim);
        debug_assert!(out.len() == panels * PANEL);
        // Two panels at a time: 2 panels × 2 halves × 2 (even/odd k) = 8 chains.
        let mut p = 0;
        while p < panels {
            let g = (panels - p).min(2);
            if g == 2 {
                gemv_group_avx2::<2>(data, dim, p, x, out);
            } else {
                gemv_group_avx2::<1>(data, dim, p, x, out);
            }
            p += g;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn gemv_group_avx2<const G: usize>(
        data: &[f32],
        dim: usize,
        first: usize,
        x: &[f32],
        out: &mut [f32],
    ) {
        let w = data.as_ptr().add(first * dim * PANEL);
        let mut even = [[_mm256_setzero_ps(); 2]; G];
        let mut odd = [[_mm256_setzero_ps(); 2]; G];
        let mut k = 0;
        while k + 2 <= dim {
            let (x0, x1) = (
                _mm256_set1_ps(*x.get_unchecked(k)),
                _mm256_set1_ps(*x.get_unchecked(k + 1)),
            );
            for g in 0..G {
                // SAFETY: panel first + g, rows k and k + 1 < dim, 16 floats each.
                let row = w.add((g * dim + k) * PANEL);
                for h in 0..2 {
                    even[g][h] = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8 * h)), x0, even[g][h]);
                    odd[g][h] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(row.add(PANEL + 8 * h)), x1, odd[g][h]);
                }
            }
            k += 2;
        }
        if k < dim {
            let x0 = _mm256_set1_ps(*x.get_unchecked(k));
            for g in 0..G {
                let row = w.add((g * dim + k) * PANEL);
                for h in 0..2 {
                    even[g][h] = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8 * h)), x0, even[g][h]);
                }
            }
        }
        for g in 0..G {
            for h in 0..2 {
                _mm256_storeu_ps(
                    out.as_mut_ptr().add((first + g) * PANEL + 8 * h),
                    _mm256_add_ps(even[g][h], odd[g][h]),
                );
            }
        }
    }

    /// One tile of `TILE_512` queries (`q_n` of them real) against every panel, two panels at a
    /// time: 24 accumulators, one chain per (head, query) over all of `k`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm_tile_avx512(
        data: &[f32],
        dim: usize,
        panels: usize,
        xr: &[f32],
        stride: usize,
        q_n: usize,
        out: &mut [f32],
    ) {
        debug_assert!(xr.len() == stride * TILE_512 && stride >= dim && q_n <= TILE_512);
        debug_assert!(out.len() >= q_n * panels * PANEL);
        let mut p = 0;
        while p < panels {
            if p + 2 <= panels {
                gemm_block_avx512::<2>(data, dim, panels, p, xr, stride, q_n, out);
                p += 2;
            } else {
                gemm_block_avx512::<1>(data, dim, panels, p, xr, stride, q_n, out);
                p += 1;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_block_avx512<const G: usize>(
        data: &[f32],
        dim: usize,
        panels: usize,
        first: usize,
        xr: &[f32],
        stride: usize,
        q_n: usize,
        out: &mut [f32],
    ) {
        let w = data.as_ptr().add(first * dim * PANEL);
        let x = xr.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); TILE_512]; G];
        for k in 0..dim {
            let mut wv = [_mm512_setzero_ps(); G];
            for g in 0..G {
                // SAFETY: panel first + g, row k < dim.
                wv[g] = _mm512_loadu_ps(w.add((g * dim + k) * PANEL));
            }
            for q in 0..TILE_512 {
                // SAFETY: xr holds TILE_512 rows of stride ≥ dim floats.
                let xq = _mm512_set1_ps(*x.add(q * stride + k));
                for g in 0..G {
                    acc[g][q] = _mm512_fmadd_ps(wv[g], xq, acc[g][q]);
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

    /// One tile of `TILE_256` queries against every panel, one panel (two registers) at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_tile_avx2(
        data: &[f32],
        dim: usize,
        panels: usize,
        xr: &[f32],
        stride: usize,
        q_n: usize,
        out: &mut [f32],
    ) {
        debug_assert!(xr.len() == stride * TILE_256 && stride >= dim && q_n <= TILE_256);
        debug_assert!(out.len() >= q_n * panels * PANEL);
        let x = xr.as_ptr();
        let padded = panels * PANEL;
        for p in 0..panels {
            let w = data.as_ptr().add(p * dim * PANEL);
            let mut acc = [[_mm256_setzero_ps(); 2]; TILE_256];
            for k in 0..dim {
                // SAFETY: panel p, row k < dim, 16 floats.
                let w0 = _mm256_loadu_ps(w.add(k * PANEL));
                let w1 = _mm256_loadu_ps(w.add(k * PANEL + 8));
                for (q, a) in acc.iter_mut().enumerate() {
                    // SAFETY: xr holds TILE_256 rows of stride ≥ dim floats.
                    let xq = _mm256_set1_ps(*x.add(q * stride + k));
                    a[0] = _mm256_fmadd_ps(w0, xq, a[0]);
                    a[1] = _mm256_fmadd_ps(w1, xq, a[1]);
                }
            }
            for (q, a) in acc.iter().enumerate().take(q_n) {
                let o = out.as_mut_ptr().add(q * padded + p * PANEL);
                // SAFETY: out holds q_n rows of `padded` floats.
                _mm256_storeu_ps(o, a[0]);
                _mm256_storeu_ps(o.add(8), a[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `|got − Σ w·x| ≤ γ_n·Σ|w·x|` (plus a tiny absolute term for sums that cancel to zero).
    fn check(got: f32, w: &[f32], x: &[f32], what: &str) {
        let exact: f64 = w
            .iter()
            .zip(x)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        let abs: f64 = w
            .iter()
            .zip(x)
            .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
            .sum();
        let n = w.len() as f64 + 1.0;
        let u = f64::from(f32::EPSILON) / 2.0;
        let bound = n * u / (1.0 - n * u) * abs + 1e-30;
        assert!(
            (f64::from(got) - exact).abs() <= bound,
            "{what}: {got} vs {exact} (bound {bound})"
        );
    }

    fn weights(heads: usize, dim: usize) -> Vec<f32> {
        (0..heads * dim)
            .map(|i| ((i as f32) * 0.731).sin() * (1.0 + (i % 7) as f32))
            .collect()
    }

    #[test]
    fn every_kernel_is_within_the_bound_for_every_tail() {
        for isa in Isa::available() {
            for dim in [1, 2, 3, 5, 16, 17, 33, 64, 131] {
                for heads in [1, 15, 16, 17, 33, 47, 64, 65, 79] {
                    let coef = weights(heads, dim);
                    let packed = Packed::with_isa(&coef, dim, isa);
                    let padded = packed.padded_heads();
                    for n in [1, 5, 6, 7, 12, 13, 25] {
                        let xs: Vec<f64> = (0..n * dim)
                            .map(|i| f64::from(((i as f32) * 0.37).cos()))
                            .collect();
                        let mut out = vec![f32::NAN; n * padded];
                        let mut scratch = Vec::new();
                        let mut norms = vec![QueryNorms::default(); n];
                        packed.gemm(&xs, &mut out, &mut norms, &mut scratch);
                        for (q, x) in xs.chunks_exact(dim).enumerate() {
                            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                            let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                            assert!((norms[q].norm - norm).abs() <= 1e-12 * norm);
                            let mut one = vec![f32::NAN; padded];
                            packed.gemv(&x32, &mut one);
                            for h in 0..padded {
                                let zero = vec![0.0f32; dim];
                                let w = coef.get(h * dim..(h + 1) * dim).unwrap_or(&zero);
                                let what =
                                    format!("{isa:?} dim {dim} heads {heads} n {n} q {q} h {h}");
                                check(one[h], w, &x32, &format!("gemv {what}"));
                                check(out[q * padded + h], w, &x32, &format!("gemm {what}"));
                            }
                        }
                    }
                }
            }
        }
    }
}
