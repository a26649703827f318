//! `y = x · Wᵀ` for the network's linear layers, with `W` packed once when the model loads.
//!
//! `W` (`[out, in]`, as PyTorch stores it) is cut into panels of [`PANEL`] output columns; each
//! panel holds, for every input index `k`, its [`PANEL`] weights side by side, so the kernel reads
//! the weights strictly in order and never repacks them per call. A checkpoint in bfloat16 (as
//! Qwen3's is) stays bfloat16 — half the memory and half the bytes read per product — and is
//! widened in registers, which is exact: the products are those of its float32 values.
//!
//! The kernel (AVX-512) keeps a tile of up to [`ROWS`] rows × [`PANEL`] columns in registers and
//! runs over blocks of [`DEPTH`] input indices, so a block of a panel (32 KiB in float32) stays in
//! L1 for every row of `x`. Threads share the panels (rayon). Each output is
//! `fma(x[k], w[k], …)` in increasing `k`, whatever the number of rows or threads, so a text
//! gets bit-identical products alone or in a batch; the portable path computes exactly the same
//! sums with `f32::mul_add` (and is what the tests compare the kernel against).

use rayon::prelude::*;

use super::files::{prefault_zeroed, WeightType};

/// Output columns per panel (two AVX-512 registers of float32).
pub(crate) const PANEL: usize = 32;

/// Input indices per block: a block of a float32 panel is 32 KiB.
const DEPTH: usize = 256;

/// Rows of `x` per register tile (2 × 12 accumulators, 2 weight and 1 broadcast register).
const ROWS: usize = 12;

/// Products with fewer multiply-adds than this run on the calling thread alone.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// Inputs of fewer values than this are regrouped on the calling thread alone.
const PARALLEL_MIN_COPY: usize = 1 << 16;

/// Whether this CPU runs the packed kernel (AVX-512F); elsewhere the model keeps candle's matmul.
pub(crate) fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Panels {
    F32(Vec<f32>),
    /// Bits of bfloat16 weights. Each group of [`PANEL`] values is stored as 16 pairs: column `j`
    /// in the low half of 32-bit word `j`, column `16 + j` in the high half, so a shift and a mask
    /// turn one 64-byte load into the two float32 registers of the panel.
    Bf16(Vec<u16>),
}

/// A weight matrix packed for [`PackedWeight::matmul`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedWeight {
    out: usize,
    inp: usize,
    panels: Panels,
}

/// Fills a [`PackedWeight`] from the row-major elements of `W`, chunk by chunk as they are read.
///
/// Rows gather in a block of one panel's rows, which is transposed into the panel when full, so
/// the packed data is written in order (the block, 64 or 128 KiB, stays in cache).
pub(crate) struct Packer {
    weight: PackedWeight,
    /// Rows `panel·PANEL..` received so far, row-major, as float32 or bfloat16 bits.
    block: Block,
    /// Elements of the current block received so far.
    filled: usize,
    /// The panel the block belongs to.
    panel: usize,
}

enum Block {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
}

impl Packer {
    /// A packer for `out × inp` weights, kept in bfloat16 when `bf16` (the elements pushed must then
    /// be bfloat16), else in float32.
    pub fn new(out: usize, inp: usize, bf16: bool) -> Self {
        let len = out.div_ceil(PANEL) * PANEL * inp;
        let (panels, block) = if bf16 {
            (
                Panels::Bf16(prefault_zeroed(len)),
                Block::Bf16(vec![0; PANEL * inp]),
            )
        } else {
            (
                Panels::F32(prefault_zeroed(len)),
                Block::F32(vec![0.0; PANEL * inp]),
            )
        };
        Self {
            weight: PackedWeight { out, inp, panels },
            block,
            filled: 0,
            panel: 0,
        }
    }

    /// Takes the next little-endian elements of `W`, of type `ty` (bfloat16 if the packer keeps
    /// bfloat16).
    pub fn push(&mut self, ty: WeightType, mut bytes: &[u8]) {
        let size = ty.size();
        while bytes.len() >= size && self.panel < self.weight.out.div_ceil(PANEL) {
            let rows = PANEL.min(self.weight.out - self.panel * PANEL);
            let want = rows * self.weight.inp;
            let take = (want - self.filled).min(bytes.len() / size);
            let (now, rest) = bytes.split_at(take * size);
            match &mut self.block {
                Block::F32(block) => {
                    super::files::widen_into(ty, now, &mut block[self.filled..self.filled + take])
                }
                Block::Bf16(block) => {
                    debug_assert_eq!(ty, WeightType::BF16);
                    for (d, c) in block[self.filled..self.filled + take]
                        .iter_mut()
                        .zip(now.chunks_exact(2))
                    {
                        *d = u16::from_le_bytes([c[0], c[1]]);
                    }
                }
            }
            self.filled += take;
            bytes = rest;
            if self.filled == want {
                self.flush(rows);
            }
        }
    }

    /// Transposes the full block (`rows` rows) into its panel.
    fn flush(&mut self, rows: usize) {
        let inp = self.weight.inp;
        let at = self.panel * inp * PANEL;
        match (&self.block, &mut self.weight.panels) {
            (Block::F32(block), Panels::F32(data)) => {
                let panel = &mut data[at..at + inp * PANEL];
                for (j, row) in block.chunks_exact(inp).take(rows).enumerate() {
                    for (k, &v) in row.iter().enumerate() {
                        panel[k * PANEL + j] = v;
                    }
                }
            }
            (Block::Bf16(block), Panels::Bf16(data)) => {
                let panel = &mut data[at..at + inp * PANEL];
                let half = PANEL / 2;
                for (j, row) in block.chunks_exact(inp).take(rows).enumerate() {
                    let lane = if j < half { 2 * j } else { 2 * (j - half) + 1 };
                    for (k, &v) in row.iter().enumerate() {
                        panel[k * PANEL + lane] = v;
                    }
                }
            }
            _ => unreachable!("the block and the panels are made together with one element type"),
        }
        self.filled = 0;
        self.panel += 1;
    }

    /// The packed weights, once all `out × inp` elements were pushed.
    pub fn finish(self) -> Option<PackedWeight> {
        let panels = self.weight.out.div_ceil(PANEL);
        let complete = self.panel == panels || (self.weight.inp == 0 && self.filled == 0);
        complete.then_some(self.weight)
    }
}

impl PackedWeight {
    /// Output features (rows of `W`).
    pub fn out_features(&self) -> usize {
        self.out
    }

    /// Input features (columns of `W`).
    pub fn in_features(&self) -> usize {
        self.inp
    }

    /// Whether the weights are kept in bfloat16.
    #[cfg(test)]
    pub fn is_bf16(&self) -> bool {
        matches!(self.panels, Panels::Bf16(_))
    }

    /// `x · Wᵀ` for row-major `x` of `rows × in_features`: `rows × out_features`, row-major.
    ///
    /// # Panics
    /// When `x` does not hold `rows × in_features` values.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matmul_with(x, rows, kernel_available())
    }

    fn matmul_with(&self, x: &[f32], rows: usize, use_kernel: bool) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.inp, "x is not rows × in_features");
        let len = rows * self.out;
        if len == 0 || self.inp == 0 {
            return vec![0.0; len];
        }
        let mut y: Vec<f32> = Vec::with_capacity(len);
        let x = interleave_tiles(x, rows, self.inp);
        let out = OutPtr(y.as_mut_ptr());
        let panel = |p: usize| {
            let out = &out;
            // SAFETY: `y` holds `rows × self.out` floats and outlives every call; panel `p` writes
            // only columns `p·PANEL..` (below `self.out`) of each row, so no two calls touch the
            // same element.
            unsafe { self.panel(p, &x, rows, out.0, use_kernel) }
        };
        let panels = self.out.div_ceil(PANEL);
        if rows * self.out * self.inp < PARALLEL_MIN_FLOPS || rayon::current_num_threads() < 2 {
            (0..panels).for_each(panel);
        } else {
            (0..panels).into_par_iter().for_each(panel);
        }
        // SAFETY: every element was written: each panel's first block of inputs stores all rows
        // of its columns (without reading them), and the panels cover all `self.out` columns.
        unsafe { y.set_len(len) };
        y
    }

    /// Computes columns `p·PANEL..(p + 1)·PANEL` (those below `out`) of every row into `y`, from
    /// `x` laid out by [`interleave_tiles`].
    ///
    /// # Safety
    /// `y` must hold `rows × self.out` floats, and no other thread may access those columns.
    unsafe fn panel(&self, p: usize, x: &[f32], rows: usize, y: *mut f32, use_kernel: bool) {
        let cols = PANEL.min(self.out - p * PANEL);
        let base = p * self.inp * PANEL;
        for k0 in (0..self.inp).step_by(DEPTH) {
            let depth = DEPTH.min(self.inp - k0);
            for (r0, n) in tiles(rows) {
                let tile = Tile {
                    rows: n,
                    cols,
                    depth,
                    x: &x[r0 * self.inp + k0 * n..],
                    y: y.add(r0 * self.out + p * PANEL),
                    y_stride: self.out,
                    accumulate: k0 > 0,
                };
                let at = base + k0 * PANEL;
                match &self.panels {
                    Panels::F32(w) => tile.run_f32(&w[at..at + depth * PANEL], use_kernel),
                    Panels::Bf16(w) => tile.run_bf16(&w[at..at + depth * PANEL], use_kernel),
                }
            }
        }
    }
}

/// The register tiles of `rows` rows, as (first row, rows): as few as [`ROWS`] allows, of sizes
/// that differ by at most one (30 rows are 10 + 10 + 10, not 12 + 12 + 6, whose last tile would
/// run at half speed).
fn tiles(rows: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = rows.div_ceil(ROWS);
    let (base, extra) = (rows / count.max(1), rows % count.max(1));
    (0..count).map(move |i| (i * base + i.min(extra), base + usize::from(i < extra)))
}

/// `x` (row-major, `rows × inp`) regrouped by register tile: the tile of rows `r0..r0 + n` (see
/// [`tiles`]) starts at `r0 · inp` and holds its `n` values of input `k` together at `k · n`, so
/// the kernel reads it in order instead of from `n` rows a whole row apart (rows 4 KiB apart
/// share cache sets, and a tile's rows then evict each other).
fn interleave_tiles(x: &[f32], rows: usize, inp: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * inp);
    let mut slots = &mut out.spare_capacity_mut()[..rows * inp];
    let mut tile_slots = Vec::with_capacity(rows.div_ceil(ROWS));
    for (r0, n) in tiles(rows) {
        let (tile, rest) = slots.split_at_mut(n * inp);
        tile_slots.push((r0, n, tile));
        slots = rest;
    }
    let interleave = |(r0, n, tile): (usize, usize, &mut [std::mem::MaybeUninit<f32>])| {
        for r in 0..n {
            let row = &x[(r0 + r) * inp..(r0 + r + 1) * inp];
            for (k, &v) in row.iter().enumerate() {
                tile[k * n + r].write(v);
            }
        }
    };
    if rows * inp < PARALLEL_MIN_COPY {
        tile_slots.into_iter().for_each(interleave);
    } else {
        tile_slots.into_par_iter().for_each(interleave);
    }
    // SAFETY: the tiles cover all `rows × inp` slots, and each slot was written above.
    unsafe { out.set_len(rows * inp) };
    out
}

/// The output buffer, shared by the threads that fill disjoint columns of it.
struct OutPtr(*mut f32);
// SAFETY: the pointer is only written through in disjoint places (see `matmul_with`).
unsafe impl Sync for OutPtr {}

/// One register tile: `rows × cols` outputs over `depth` input indices.
struct Tile<'a> {
    rows: usize,
    cols: usize,
    depth: usize,
    /// `x[k · rows + r]` is row `r`, input index `k` (relative to the tile).
    x: &'a [f32],
    y: *mut f32,
    y_stride: usize,
    /// Add to the outputs (a later block of input indices) instead of overwriting them.
    accumulate: bool,
}

impl Tile<'_> {
    /// # Safety
    /// `y` must be valid for `rows` rows of `cols` floats at `y_stride`.
    unsafe fn run_f32(&self, w: &[f32], use_kernel: bool) {
        debug_assert!(self.x.len() >= self.rows * self.depth);
        #[cfg(target_arch = "x86_64")]
        if use_kernel {
            return avx512::run_f32(self, w.as_ptr());
        }
        let _ = use_kernel;
        self.portable(|k, j| w[k * PANEL + j]);
    }

    /// # Safety
    /// As [`Tile::run_f32`].
    unsafe fn run_bf16(&self, w: &[u16], use_kernel: bool) {
        debug_assert!(self.x.len() >= self.rows * self.depth);
        #[cfg(target_arch = "x86_64")]
        if use_kernel {
            return avx512::run_bf16(self, w.as_ptr());
        }
        let _ = use_kernel;
        let half = PANEL / 2;
        self.portable(|k, j| {
            let lane = if j < half { 2 * j } else { 2 * (j - half) + 1 };
            f32::from_bits(u32::from(w[k * PANEL + lane]) << 16)
        });
    }

    /// The same sums as the kernel, one output at a time.
    ///
    /// # Safety
    /// As [`Tile::run_f32`].
    unsafe fn portable(&self, weight: impl Fn(usize, usize) -> f32) {
        for r in 0..self.rows {
            for j in 0..self.cols {
                let out = self.y.add(r * self.y_stride + j);
                let mut acc = if self.accumulate { *out } else { 0.0 };
                for k in 0..self.depth {
                    acc = self.x[k * self.rows + r].mul_add(weight(k, j), acc);
                }
                *out = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Tile, PANEL, ROWS};

    /// Masks of the valid lanes of the two registers of a panel with `cols` columns.
    fn masks(cols: usize) -> (__mmask16, __mmask16) {
        let bits = if cols >= PANEL {
            u32::MAX
        } else {
            (1u32 << cols) - 1
        };
        (bits as __mmask16, (bits >> 16) as __mmask16)
    }

    macro_rules! dispatch {
        ($tile:expr, $w:expr, $kernel:ident) => {{
            let t = $tile;
            let (lo, hi) = masks(t.cols);
            let args = (t.depth, t.x.as_ptr(), $w, t.y, t.y_stride, lo, hi);
            let acc = t.accumulate;
            match t.rows {
                1 => $kernel::<1>(args, acc),
                2 => $kernel::<2>(args, acc),
                3 => $kernel::<3>(args, acc),
                4 => $kernel::<4>(args, acc),
                5 => $kernel::<5>(args, acc),
                6 => $kernel::<6>(args, acc),
                7 => $kernel::<7>(args, acc),
                8 => $kernel::<8>(args, acc),
                9 => $kernel::<9>(args, acc),
                10 => $kernel::<10>(args, acc),
                11 => $kernel::<11>(args, acc),
                _ => {
                    debug_assert_eq!(t.rows, ROWS);
                    $kernel::<ROWS>(args, acc)
                }
            }
        }};
    }

    /// # Safety
    /// The CPU has AVX-512F; `w` holds `depth × PANEL` floats; see [`Tile::run_f32`].
    pub(super) unsafe fn run_f32(tile: &Tile<'_>, w: *const f32) {
        dispatch!(tile, w, kernel_f32)
    }

    /// # Safety
    /// The CPU has AVX-512F; `w` holds `depth × PANEL` bfloat16; see [`Tile::run_f32`].
    pub(super) unsafe fn run_bf16(tile: &Tile<'_>, w: *const u16) {
        dispatch!(tile, w, kernel_bf16)
    }

    type Args<W> = (
        usize,
        *const f32,
        *const W,
        *mut f32,
        usize,
        __mmask16,
        __mmask16,
    );

    /// `a[0] += x · w0` and `a[1] += x · w1` (fused) for the float32 at `x`, which the multiply-adds
    /// broadcast from memory themselves: a separate broadcast into a register would compete with
    /// the weights' widening for the same vector ports.
    macro_rules! fma_broadcast {
        ($a:expr, $w0:expr, $w1:expr, $x:expr) => {
            std::arch::asm!(
                "vfmadd231ps {a0}, {w0}, dword ptr [{x}]{{1to16}}",
                "vfmadd231ps {a1}, {w1}, dword ptr [{x}]{{1to16}}",
                a0 = inout(zmm_reg) $a[0],
                a1 = inout(zmm_reg) $a[1],
                w0 = in(zmm_reg) $w0,
                w1 = in(zmm_reg) $w1,
                x = in(reg) $x,
                options(pure, readonly, nostack, preserves_flags),
            )
        };
    }

    #[inline(always)]
    unsafe fn load<const R: usize>(
        y: *mut f32,
        y_stride: usize,
        lo: __mmask16,
        hi: __mmask16,
        accumulate: bool,
    ) -> [[__m512; 2]; R] {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if accumulate {
            for (r, a) in acc.iter_mut().enumerate() {
                let row = y.add(r * y_stride);
                a[0] = _mm512_maskz_loadu_ps(lo, row);
                a[1] = _mm512_maskz_loadu_ps(hi, row.add(16));
            }
        }
        acc
    }

    #[inline(always)]
    unsafe fn store<const R: usize>(
        acc: &[[__m512; 2]; R],
        y: *mut f32,
        y_stride: usize,
        lo: __mmask16,
        hi: __mmask16,
    ) {
        for (r, a) in acc.iter().enumerate() {
            let row = y.add(r * y_stride);
            _mm512_mask_storeu_ps(row, lo, a[0]);
            _mm512_mask_storeu_ps(row.add(16), hi, a[1]);
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32<const R: usize>(args: Args<f32>, accumulate: bool) {
        let (depth, x, w, y, y_stride, lo, hi) = args;
        let mut acc = load::<R>(y, y_stride, lo, hi, accumulate);
        for k in 0..depth {
            let w0 = _mm512_loadu_ps(w.add(k * PANEL));
            let w1 = _mm512_loadu_ps(w.add(k * PANEL + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                fma_broadcast!(a, w0, w1, x.add(k * R + r));
            }
        }
        store::<R>(&acc, y, y_stride, lo, hi);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_bf16<const R: usize>(args: Args<u16>, accumulate: bool) {
        let (depth, x, w, y, y_stride, lo, hi) = args;
        let high_halves = _mm512_set1_epi32(0xffff_0000_u32 as i32);
        let mut acc = load::<R>(y, y_stride, lo, hi, accumulate);
        for k in 0..depth {
            let pairs = _mm512_loadu_si512(w.add(k * PANEL).cast());
            let w0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(pairs));
            let w1 = _mm512_castsi512_ps(_mm512_and_si512(pairs, high_halves));
            for (r, a) in acc.iter_mut().enumerate() {
                fma_broadcast!(a, w0, w1, x.add(k * R + r));
            }
        }
        store::<R>(&acc, y, y_stride, lo, hi);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;

    fn pack(w: &[f32], out: usize, inp: usize, bf16: bool) -> PackedWeight {
        let mut packer = Packer::new(out, inp, bf16);
        // Odd chunk sizes, so rows are split across pushes.
        if bf16 {
            let bytes: Vec<u8> = w
                .iter()
                .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                .collect();
            for chunk in bytes.chunks(2 * 37) {
                packer.push(WeightType::BF16, chunk);
            }
        } else {
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            for chunk in bytes.chunks(4 * 53) {
                packer.push(WeightType::F32, chunk);
            }
        }
        packer.finish().expect("all elements pushed")
    }

    /// `x · Wᵀ` in float64.
    fn reference(x: &[f32], w: &[f32], rows: usize, out: usize, inp: usize) -> Vec<f64> {
        let mut y = vec![0f64; rows * out];
        for r in 0..rows {
            for n in 0..out {
                y[r * out + n] = (0..inp)
                    .map(|k| f64::from(x[r * inp + k]) * f64::from(w[n * inp + k]))
                    .sum();
            }
        }
        y
    }

    /// Shapes around every edge: partial panels and tiles, one and several depth blocks.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 32, 16),
        (3, 33, 7),
        (12, 64, 256),
        (13, 31, 257),
        (25, 96, 600),
        (30, 70, 1024),
        (64, 40, 513),
    ];

    #[test]
    fn products_match_float64_and_the_kernel_matches_the_portable_sums_bit_for_bit() {
        for &(rows, out, inp) in SHAPES {
            for bf16 in [false, true] {
                let mut w = values(out * inp, (rows * out + inp) as u64);
                if bf16 {
                    // Weights that bfloat16 holds exactly.
                    w.iter_mut()
                        .for_each(|v| *v = f32::from_bits(v.to_bits() & 0xffff_0000));
                }
                let x = values(rows * inp, 7 + inp as u64);
                let packed = pack(&w, out, inp, bf16);
                assert_eq!(packed.is_bf16(), bf16);
                let portable = packed.matmul_with(&x, rows, false);
                let expected = reference(&x, &w, rows, out, inp);
                for (i, (&got, &want)) in portable.iter().zip(&expected).enumerate() {
                    let bound = 1e-6 * (inp as f64).sqrt() * (1.0 + want.abs());
                    assert!(
                        (f64::from(got) - want).abs() <= bound,
                        "{rows}×{out}×{inp} bf16={bf16} [{i}]: {got} vs {want}"
                    );
                }
                if kernel_available() {
                    let kernel = packed.matmul_with(&x, rows, true);
                    let same = kernel
                        .iter()
                        .zip(&portable)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{rows}×{out}×{inp} bf16={bf16}: kernel ≠ portable");
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_products_alone_or_among_others() {
        let (rows, out, inp) = (29, 128, 1024);
        let w = values(out * inp, 3);
        let x = values(rows * inp, 4);
        let packed = pack(&w, out, inp, false);
        let all = packed.matmul(&x, rows);
        for r in [0, 11, 12, 28] {
            let alone = packed.matmul(&x[r * inp..(r + 1) * inp], 1);
            assert_eq!(alone, all[r * out..(r + 1) * out], "row {r}");
        }
    }

    #[test]
    fn tiles_cover_the_rows_in_even_sizes() {
        for rows in 0..100 {
            let t: Vec<_> = tiles(rows).collect();
            let mut next = 0;
            for &(r0, n) in &t {
                assert_eq!(r0, next);
                assert!((1..=ROWS).contains(&n));
                next += n;
            }
            assert_eq!(next, rows);
            assert_eq!(t.len(), rows.div_ceil(ROWS));
            let sizes = t.iter().map(|&(_, n)| n);
            assert!(sizes.clone().max().unwrap_or(0) - sizes.min().unwrap_or(0) <= 1);
        }
        assert_eq!(tiles(30).collect::<Vec<_>>(), [(0, 10), (10, 10), (20, 10)]);
    }

    #[test]
    fn an_unfinished_packer_has_no_weight() {
        let mut packer = Packer::new(2, 3, false);
        packer.push(WeightType::F32, &[0u8; 4 * 5]);
        assert!(packer.finish().is_none());
        assert_eq!(pack(&[], 0, 0, false).matmul(&[], 0), Vec::<f32>::new());
    }
}
