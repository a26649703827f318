//! JSON numbers to `f64`, correctly rounded, in one pass over their text: up to 19 significant
//! digits are gathered (eight at a time where eight digits follow one another) into an integer
//! `w`, and `w·10^q` is rounded by Clinger's exact fast path or the Eisel-Lemire algorithm (as in
//! fast_float, which this follows). Anything else (more digits, exponents beyond ±342, the rare
//! products Eisel-Lemire cannot round) goes to fast-float2, which is correct everywhere.

use std::sync::OnceLock;

/// The smallest and largest `q` of the table of powers of five.
const SMALLEST_POWER: i64 = -342;
const LARGEST_POWER: i64 = 308;

/// Significant digits a `u64` always holds.
const MAX_DIGITS: usize = 19;

const MANTISSA_BITS: i32 = 52;
const MINIMUM_EXPONENT: i32 = -1023;
const INFINITE_POWER: i32 = 0x7FF;
/// The `q` within which a product that ends in zeros may be an exact halfway case.
const ROUND_TO_EVEN: std::ops::RangeInclusive<i64> = -4..=23;

/// Powers of ten an `f64` holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The JSON number at the start of `b` (`-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`)
/// and its length; `None` when `b` does not start with one.
#[cold]
#[inline(never)]
pub(super) fn parse_number(b: &[u8]) -> Option<(f64, usize)> {
    let (negative, mut rest) = match b {
        [b'-', tail @ ..] => (true, tail),
        _ => (false, b),
    };
    let mut w = 0u64;
    let mut digits = 0;
    match rest {
        [b'0', b'0'..=b'9', ..] => return None,
        [b'0', tail @ ..] => rest = tail,
        [b'1'..=b'9', ..] => {
            let after = read_digits(rest, &mut w);
            digits = rest.len() - after.len();
            rest = after;
        }
        _ => return None,
    }
    let mut q = 0i64;
    if let [b'.', fraction @ ..] = rest {
        let mut significant = fraction;
        if digits == 0 {
            while let [b'0', tail @ ..] = significant {
                significant = tail;
            }
        }
        let after = read_digits(significant, &mut w);
        if after.len() == fraction.len() {
            return None;
        }
        digits += significant.len() - after.len();
        q = -((fraction.len() - after.len()) as i64);
        rest = after;
    }
    if let [b'e' | b'E', tail @ ..] = rest {
        let (negative_exponent, start) = match tail {
            [b'-', tail @ ..] => (true, tail),
            [b'+', tail @ ..] => (false, tail),
            _ => (false, tail),
        };
        let mut exponent = 0i64;
        rest = start;
        while let [c @ b'0'..=b'9', tail @ ..] = rest {
            if exponent < 1 << 20 {
                exponent = exponent * 10 + i64::from(c - b'0');
            }
            rest = tail;
        }
        if rest.len() == start.len() {
            return None;
        }
        q += if negative_exponent {
            -exponent
        } else {
            exponent
        };
    }
    let at = b.len() - rest.len();
    let magnitude = if digits > MAX_DIGITS {
        None
    } else if w == 0 {
        Some(0.0)
    } else {
        to_f64(w, q)
    };
    match magnitude {
        Some(m) => Some((if negative { -m } else { m }, at)),
        None => parse_slowly(&b[..at]).map(|v| (v, at)),
    }
}

/// [`parse_number`] for the shape JSON writers give embedding values, `-?0.[0-9]{1,19}` without
/// an exponent, read with loads at fixed offsets (so it needs 26 bytes after the sign); `None`
/// for anything else, which [`parse_number`] then reads.
#[inline(always)]
pub(super) fn parse_fraction(b: &[u8]) -> Option<(f64, usize)> {
    let (negative, s) = match b {
        [b'-', tail @ ..] => (true, tail),
        _ => (false, b),
    };
    let s: &[u8; 26] = s.first_chunk()?;
    let [b'0', b'.', ..] = s else {
        return None;
    };
    let load = |at: usize| {
        let mut eight = [0; 8];
        eight.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(eight)
    };
    // Leading zeros of the fraction are read as digits: they leave `w` as it is.
    let mut w = 0;
    let mut length = 0;
    let mut chunk = load(2);
    let mut flags = not_digits(chunk);
    if flags == 0 {
        w = eight_digits(chunk);
        length = 8;
        chunk = load(10);
        flags = not_digits(chunk);
        if flags == 0 {
            w = w * 100_000_000 + eight_digits(chunk);
            length = 16;
            chunk = load(18);
            flags = not_digits(chunk);
            if flags == 0 {
                return None;
            }
        }
    }
    let n = flags.trailing_zeros() as usize / 8;
    let length = length + n;
    if length == 0 || length > MAX_DIGITS {
        return None;
    }
    if n > 0 {
        let shift = 8 * (8 - n) as u32;
        let zeros_first = chunk << shift | 0x3030_3030_3030_3030 >> (64 - shift);
        w = w * POWERS_OF_TEN_U64[n] + eight_digits(zeros_first);
    }
    if (chunk >> (8 * n)) as u8 | 0x20 == b'e' {
        return None;
    }
    let magnitude = if w == 0 {
        0.0
    } else {
        to_f64(w, -(length as i64))?
    };
    let m = if negative { -magnitude } else { magnitude };
    Some((m, usize::from(negative) + 2 + length))
}

/// The value of a whole JSON number, by fast-float2 (which handles every case).
#[cold]
#[inline(never)]
fn parse_slowly(number: &[u8]) -> Option<f64> {
    fast_float2::parse(number).ok()
}

/// What follows the digits at the start of `b`, each appended to `w` (which wraps past 19
/// digits): eight at a time, then the last up to seven at once where eight bytes can be read.
#[inline]
fn read_digits<'a>(mut b: &'a [u8], w: &mut u64) -> &'a [u8] {
    while let Some((eight, tail)) = b.split_first_chunk::<8>() {
        let eight = u64::from_le_bytes(*eight);
        let not_digits = not_digits(eight);
        if not_digits == 0 {
            *w = w
                .wrapping_mul(100_000_000)
                .wrapping_add(eight_digits(eight));
            b = tail;
            continue;
        }
        // The lowest flag is the first byte that is not a digit (the bytes before it stay clean).
        let n = not_digits.trailing_zeros() as usize / 8;
        if n > 0 {
            let shift = 8 * (8 - n) as u32;
            let zeros_first = eight << shift | 0x3030_3030_3030_3030 >> (64 - shift);
            *w = w
                .wrapping_mul(POWERS_OF_TEN_U64[n])
                .wrapping_add(eight_digits(zeros_first));
        }
        return &b[n..];
    }
    while let [c @ b'0'..=b'9', tail @ ..] = b {
        *w = w.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        b = tail;
    }
    b
}

const POWERS_OF_TEN_U64: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// `0x80` in each byte of the eight (read little-endian) that is not an ASCII digit (and maybe in
/// later bytes after the first such byte), zero elsewhere.
#[inline]
fn not_digits(eight: u64) -> u64 {
    let below = eight.wrapping_sub(0x3030_3030_3030_3030);
    let above = eight.wrapping_add(0x4646_4646_4646_4646);
    (below | above) & 0x8080_8080_8080_8080
}

/// The value of eight ASCII digits read little-endian (the first the most significant).
#[inline]
fn eight_digits(eight: u64) -> u64 {
    let below = eight.wrapping_sub(0x3030_3030_3030_3030);
    let pairs = below.wrapping_mul(10).wrapping_add(below >> 8);
    let low = (pairs & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
    let high = ((pairs >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
    low.wrapping_add(high) >> 32
}

/// `w·10^q` rounded to the nearest `f64` (ties to even), for `0 < w < 10^19`; `None` when neither
/// path can round it.
#[inline]
fn to_f64(w: u64, q: i64) -> Option<f64> {
    if w <= 1 << 53 && (-22..=22).contains(&q) {
        // Both factors are exact, so the one operation rounds once.
        let power = EXACT_POWERS_OF_TEN[q.unsigned_abs() as usize];
        return Some(if q < 0 {
            w as f64 / power
        } else {
            w as f64 * power
        });
    }
    if !(SMALLEST_POWER..=LARGEST_POWER).contains(&q) {
        return None;
    }
    eisel_lemire(w, q).map(f64::from_bits)
}

/// The bits of `w·10^q` rounded (fast_float's `compute_float` for `f64`), or `None` when the
/// truncated product cannot tell which way to round.
#[inline(always)]
fn eisel_lemire(w: u64, q: i64) -> Option<u64> {
    let lz = w.leading_zeros();
    let w = w << lz;
    let (hi5, lo5) = powers_of_five()[(q - SMALLEST_POWER) as usize];
    let precision = MANTISSA_BITS + 3;
    let mask = u64::MAX >> precision;
    let first = u128::from(w) * u128::from(hi5);
    let (mut lo, mut hi) = (first as u64, (first >> 64) as u64);
    if hi & mask == mask {
        let second_hi = ((u128::from(w) * u128::from(lo5)) >> 64) as u64;
        lo = lo.wrapping_add(second_hi);
        if second_hi > lo {
            hi += 1;
        }
    }
    if lo == u64::MAX && !(-27..=55).contains(&q) {
        return None;
    }
    let upper_bit = (hi >> 63) as i32;
    let shift = upper_bit + 64 - precision;
    let mut mantissa = hi >> shift;
    let mut power2 = binary_exponent(q) + upper_bit - lz as i32 - MINIMUM_EXPONENT;
    if power2 <= 0 {
        if -power2 + 1 >= 64 {
            return Some(0);
        }
        mantissa >>= -power2 + 1;
        mantissa += mantissa & 1;
        mantissa >>= 1;
        let power2 = u64::from(mantissa >= 1 << MANTISSA_BITS);
        return Some(mantissa | power2 << MANTISSA_BITS);
    }
    if lo <= 1 && ROUND_TO_EVEN.contains(&q) && mantissa & 3 == 1 && mantissa << shift == hi {
        mantissa &= !1;
    }
    mantissa += mantissa & 1;
    mantissa >>= 1;
    if mantissa >= 2 << MANTISSA_BITS {
        mantissa = 1 << MANTISSA_BITS;
        power2 += 1;
    }
    mantissa &= !(1 << MANTISSA_BITS);
    if power2 >= INFINITE_POWER {
        return Some(f64::INFINITY.to_bits());
    }
    Some(mantissa | (power2 as u64) << MANTISSA_BITS)
}

/// `floor(q·log2(10)) + 63`.
fn binary_exponent(q: i64) -> i32 {
    ((q as i32).wrapping_mul(152_170 + 65_536) >> 16) + 63
}

/// For each `q` from [`SMALLEST_POWER`] to [`LARGEST_POWER`], the 128 most significant bits of
/// `5^q` (high and low halves): `5^q` itself truncated for `q ≥ 0`, and for `q < 0`
/// `2^b / 5^-q + 1` truncated, with `b` as fast_float's table has it. Computed once.
fn powers_of_five() -> &'static [(u64, u64)] {
    static TABLE: OnceLock<Vec<(u64, u64)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (SMALLEST_POWER..=LARGEST_POWER)
            .map(|q| {
                let power = if q < 0 {
                    let five = Big::power_of_five(q.unsigned_abs() as u32);
                    let z = five.bits();
                    let b = if q < -27 { 2 * z + 128 } else { z + 127 };
                    let mut c = Big::power_of_two(b);
                    c.divide_by_power_of_five(q.unsigned_abs() as u32);
                    c.add_one();
                    c
                } else {
                    Big::power_of_five(q as u32)
                };
                power.top_128()
            })
            .collect()
    })
}

/// An unsigned integer of any size, little-endian 64-bit limbs: just what the table needs.
struct Big(Vec<u64>);

impl Big {
    fn power_of_two(n: u32) -> Self {
        let mut limbs = vec![0; n as usize / 64 + 1];
        limbs[n as usize / 64] = 1 << (n % 64);
        Big(limbs)
    }

    fn power_of_five(n: u32) -> Self {
        let mut big = Big(vec![1]);
        for factor in factors_of_five(n) {
            big.multiply(factor);
        }
        big
    }

    fn multiply(&mut self, by: u64) {
        let mut carry = 0u128;
        for limb in &mut self.0 {
            let product = u128::from(*limb) * u128::from(by) + carry;
            *limb = product as u64;
            carry = product >> 64;
        }
        if carry > 0 {
            self.0.push(carry as u64);
        }
    }

    /// `self / 5^n`, rounded down (dividing by the factors one after the other rounds the same).
    fn divide_by_power_of_five(&mut self, n: u32) {
        for factor in factors_of_five(n) {
            let by = u128::from(factor);
            let mut remainder = 0u128;
            for limb in self.0.iter_mut().rev() {
                let value = remainder << 64 | u128::from(*limb);
                *limb = (value / by) as u64;
                remainder = value % by;
            }
        }
    }

    fn add_one(&mut self) {
        for limb in &mut self.0 {
            let (sum, carry) = limb.overflowing_add(1);
            *limb = sum;
            if !carry {
                return;
            }
        }
        self.0.push(1);
    }

    fn bits(&self) -> u32 {
        let top = self.0.iter().rposition(|&l| l != 0).unwrap_or(0);
        top as u32 * 64 + (64 - self.0[top].leading_zeros())
    }

    /// The 128 bits from the highest set bit down (zeros past the end), as (high, low).
    fn top_128(&self) -> (u64, u64) {
        let bits = self.bits();
        let bit = |i: i64| -> u64 {
            if i < 0 {
                0
            } else {
                (self.0[i as usize / 64] >> (i % 64)) & 1
            }
        };
        let mut halves = [0u64; 2];
        for (n, half) in halves.iter_mut().enumerate() {
            for k in 0..64 {
                let i = i64::from(bits) - 1 - (n as i64 * 64 + k);
                *half = *half << 1 | bit(i);
            }
        }
        (halves[0], halves[1])
    }
}

/// `5^n` as factors that fit a `u64`: `5^27` as often as it goes, then the rest.
fn factors_of_five(n: u32) -> impl Iterator<Item = u64> {
    std::iter::repeat_n(27, (n / 27) as usize)
        .chain([n % 27])
        .map(|k| 5u64.pow(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A splitmix64 stream: the same strings on every run.
    struct Numbers(u64);

    impl Numbers {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    /// `text` alone and followed by more of an array parse as `str::parse` has it.
    fn check(text: &str) -> bool {
        let want = text.parse::<f64>().unwrap();
        let mut fast = false;
        for json in [text.to_owned(), format!("{text}, 0.25, -1e-3, 0.5]")] {
            let got = parse_number(json.as_bytes());
            assert_eq!(
                got.map(|(v, n)| (v.to_bits(), n)),
                Some((want.to_bits(), text.len())),
                "{json}: {got:?}, want {want:e}"
            );
            if let Some((v, n)) = parse_fraction(json.as_bytes()) {
                assert_eq!((v.to_bits(), n), (want.to_bits(), text.len()), "{json}");
                fast = true;
            }
        }
        fast
    }

    /// The forms a JSON writer gives a value: shortest round trip, scientific, plain, and
    /// rounded to every number of significant digits up to 25 (which makes near-halfway cases).
    fn forms(v: f64) -> Vec<String> {
        let mut all = vec![format!("{v:?}"), format!("{v:e}"), format!("{v:E}")];
        if v.abs() < 1e30 && v.abs() > 1e-30 {
            all.push(format!("{v}"));
        }
        for precision in 0..25 {
            all.push(format!("{v:.precision$e}"));
        }
        all.into_iter()
            .map(|s| s.replace("inf", "1e999"))
            .filter(|s| !s.contains("NaN"))
            .collect()
    }

    #[test]
    fn the_table_is_fast_floats() {
        let table = powers_of_five();
        assert_eq!(table.len(), 651);
        assert_eq!(table[0], (0xeef4_53d6_923b_d65a, 0x113f_aa29_06a1_3b3f));
        assert_eq!(table[1], (0x9558_b466_1b65_65f8, 0x4ac7_ca59_a424_c507));
        assert_eq!(table[342], (0x8000_0000_0000_0000, 0));
        assert_eq!(table[650], (0x8e67_9c2f_5e44_ff8f, 0x570f_09ea_a7ea_7648));
    }

    #[test]
    fn digits_are_read_up_to_the_first_other_byte() {
        for (text, value, rest) in [
            (&b"12345678"[..], 12_345_678, &b""[..]),
            (&b"00000000"[..], 0, &b""[..]),
            (&b"9999999999999999"[..], 9_999_999_999_999_999, &b""[..]),
            (&b"1234567x"[..], 1_234_567, &b"x"[..]),
            (&b"1234567,89012345"[..], 1_234_567, &b",89012345"[..]),
            (
                &b"12345678901234567,"[..],
                12_345_678_901_234_567,
                &b","[..],
            ),
            (&b"/2345678"[..], 0, &b"/2345678"[..]),
            (&b"1234:678"[..], 1234, &b":678"[..]),
            (&b"1\xff345678"[..], 1, &b"\xff345678"[..]),
            (&b"1234 678"[..], 1234, &b" 678"[..]),
            (&b"123"[..], 123, &b""[..]),
            (&b"123e5"[..], 123, &b"e5"[..]),
            (&b""[..], 0, &b""[..]),
        ] {
            let mut w = 0;
            let after = read_digits(text, &mut w);
            assert_eq!((w, after), (value, rest), "{text:?}");
        }
    }

    #[test]
    fn random_doubles_in_every_form_parse_as_std_parses_them() {
        let mut random = Numbers(1);
        for _ in 0..20_000 {
            let v = f64::from_bits(random.next());
            for text in forms(v) {
                check(&text);
            }
        }
    }

    #[test]
    fn float32_values_written_as_doubles_parse_as_std_parses_them() {
        // What Python's json writes for float32 embeddings: up to 17 digits after zeros.
        let mut random = Numbers(2);
        let mut fast = 0;
        for _ in 0..100_000 {
            let x = f32::from_bits(random.next() as u32 & 0x3fff_ffff | 0x3000_0000);
            let sign = if random.next() & 1 == 0 { "" } else { "-" };
            fast += usize::from(check(&format!("{sign}{:?}", f64::from(x))));
            check(&format!("{sign}{x:?}"));
            check(&format!("{sign}{}", f64::from(x)));
        }
        // Most take the fixed-offset path.
        assert!(fast > 30_000, "{fast}");
    }

    #[test]
    fn the_fixed_offset_path_reads_only_its_shape() {
        for (text, length) in [
            ("0.5, 1, 2, 3, 4, 5, 6, 7, 8", Some(3)),
            ("-0.0000000000000000001, 0, 0, 0", Some(22)),
            ("0.00000000000000000001, 0, 0, 0", None),
            ("0.1234567890123456789, 0, 0, 0", Some(21)),
            ("-0.12345678901234567, 0, 0, 0, 0", Some(20)),
            ("0.12345678901234567890, 0, 0, 0", None),
            ("0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0", Some(3)),
            ("0.25e1, 0.0, 0.0, 0.0, 0.0, 0.0", None),
            ("0.25E1, 0.0, 0.0, 0.0, 0.0, 0.0", None),
            ("0., 0.0, 0.0, 0.0, 0.0, 0.0, 0.0", None),
            ("1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0", None),
            ("00.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0", None),
            ("0.5", None),
        ] {
            let want = length.map(|n| (text[..n].parse::<f64>().unwrap().to_bits(), n));
            let got = parse_fraction(text.as_bytes()).map(|(v, n)| (v.to_bits(), n));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn hard_cases_parse_as_std_parses_them() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "0e5",
            "-0.000e-7",
            "0.000",
            "1",
            "-1",
            "9007199254740992",
            "9007199254740993",
            "9007199254740995",
            "9007199254740994.5",
            "18014398509481985",
            "1e22",
            "1e23",
            "123456789e15",
            "5e-324",
            "2.4703282292062327e-324",
            "2.4703282292062328e-324",
            "4.9406564584124654e-324",
            "2.2250738585072011e-308",
            "2.2250738585072014e-308",
            "2.225073858507201136057409796709131975934819546351645e-308",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "1e308",
            "1e309",
            "1e-342",
            "1e-343",
            "1e-400",
            "1e400",
            "123e-345",
            "0.1",
            "0.2",
            "0.30000000000000004",
            "1.00000000000000011102230246251565404236316680908203125",
            "1.00000000000000011102230246251565404236316680908203124",
            "1.00000000000000011102230246251565404236316680908203126",
            "9999999999999999999",
            "10000000000000000000",
            "99999999999999999999e-20",
            "1234567890123456789",
            "12345678901234567890",
            "0.0000000000000000000000001",
            "1E+2",
            "1e-2",
            "12.5E3",
            "1e0000000000000000000000001",
            "1e-99999999999999",
            "7.2057594037927933e16",
            "8.98846567431158e307",
            "3.0e-8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Exact halfway points between neighbouring doubles that are integers of 54 to 64 bits
        // (ties go to the even neighbour), and the integers just beside them.
        let mut random = Numbers(3);
        for bits in 54..=64u32 {
            for _ in 0..2_000 {
                let top = random.next() | 1 << 63;
                let n = (top >> (64 - bits)) & !((1u64 << (bits - 53)) - 1);
                let half = n + (1 << (bits - 54));
                for m in [half - 1, half, half + 1] {
                    cases.push(m.to_string());
                    cases.push(format!("{m}e-3"));
                    cases.push(format!("{m}e7"));
                }
            }
        }
        // Subnormals and the smallest normals.
        for _ in 0..20_000 {
            let v = f64::from_bits(random.next() >> 12 | (random.next() & 1) << 63);
            cases.extend(forms(v));
            cases.extend(forms(f64::from_bits(random.next() >> 11)));
        }
        for case in &cases {
            check(case);
        }
    }

    #[test]
    fn only_json_numbers_are_read() {
        for bad in [
            "", "-", "+1", ".5", "-.5", "1.", "1.e5", "01", "-01", "00", "1e", "1e+", "1E-", "inf",
            "NaN", "-inf", "e5",
        ] {
            assert_eq!(parse_number(bad.as_bytes()), None, "{bad}");
        }
        // A number ends where JSON's syntax does.
        for (text, length) in [
            ("1.5,", 3),
            ("-0]", 2),
            ("1e5 ", 3),
            ("2.0e-1x", 6),
            ("0.5.5", 3),
            ("0x1", 1),
        ] {
            assert_eq!(
                parse_number(text.as_bytes()).map(|(_, n)| n),
                Some(length),
                "{text}"
            );
        }
    }
}
