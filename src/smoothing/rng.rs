//! Fast reproducible random numbers for smoothing: a 64-bit counter-based generator and a
//! ziggurat standard normal (Marsaglia & Tsang 2000) that turns one 32-bit draw into a normal
//! in about 99 % of cases.

/// wyrand: a 64-bit generator with a 2^64 period that passes BigCrush and PractRand, one
/// multiply per draw.
#[derive(Clone, Debug)]
pub struct WyRand(u64);

impl WyRand {
    /// A generator for the stream `(seed, a, b, c)`; streams with different keys are
    /// statistically independent for our purposes (the key is mixed by SplitMix64).
    pub fn stream(seed: u64, a: u64, b: u64, c: u64) -> Self {
        let mut s = seed;
        for k in [a, b, c] {
            s = splitmix(s ^ splitmix(k.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        }
        WyRand(s)
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in (0, 1).
    #[inline]
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Ziggurat tables for the standard normal (128 layers).
pub struct Ziggurat {
    kn: [u32; 128],
    wn: [f64; 128],
    fn_: [f64; 128],
}

const R: f64 = 3.442619855899;

impl Default for Ziggurat {
    fn default() -> Self {
        Self::new()
    }
}

impl Ziggurat {
    /// Build the tables (Marsaglia & Tsang's construction).
    pub fn new() -> Self {
        let m1 = 2147483648.0f64; // 2^31
        let vn = 9.91256303526217e-3;
        let mut dn = R;
        let mut tn = dn;
        let q = vn / (-0.5 * dn * dn).exp();
        let mut kn = [0u32; 128];
        let mut wn = [0.0f64; 128];
        let mut fn_ = [0.0f64; 128];
        kn[0] = ((dn / q) * m1) as u32;
        kn[1] = 0;
        wn[0] = q / m1;
        wn[127] = dn / m1;
        fn_[0] = 1.0;
        fn_[127] = (-0.5 * dn * dn).exp();
        for i in (1..=126).rev() {
            dn = (-2.0 * (vn / dn + (-0.5 * dn * dn).exp()).ln()).sqrt();
            kn[i + 1] = ((dn / tn) * m1) as u32;
            tn = dn;
            fn_[i] = (-0.5 * dn * dn).exp();
            wn[i] = dn / m1;
        }
        Ziggurat { kn, wn, fn_ }
    }

    /// One standard normal from the 32-bit draw `hz` (more draws from `rng` if rejected).
    #[inline]
    pub fn normal(&self, hz: u32, rng: &mut WyRand) -> f64 {
        let hz = hz as i32;
        let iz = (hz & 127) as usize;
        if hz.unsigned_abs() < self.kn[iz] {
            return hz as f64 * self.wn[iz];
        }
        self.fix(hz, iz, rng)
    }

    #[cold]
    fn fix(&self, mut hz: i32, mut iz: usize, rng: &mut WyRand) -> f64 {
        loop {
            let x = hz as f64 * self.wn[iz];
            if iz == 0 {
                // The tail beyond R (Marsaglia's method).
                loop {
                    let xx = -rng.open01().ln() / R;
                    let yy = -rng.open01().ln();
                    if yy + yy >= xx * xx {
                        return if hz > 0 { R + xx } else { -R - xx };
                    }
                }
            }
            if self.fn_[iz] + rng.open01() * (self.fn_[iz - 1] - self.fn_[iz])
                < (-0.5 * x * x).exp()
            {
                return x;
            }
            hz = rng.next_u64() as u32 as i32;
            iz = (hz & 127) as usize;
            if hz.unsigned_abs() < self.kn[iz] {
                return hz as f64 * self.wn[iz];
            }
        }
    }

    /// Fill `out` with `sigma`-scaled normals, two per 64-bit draw.
    pub fn fill(&self, rng: &mut WyRand, sigma: f32, out: &mut [f32]) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let r = rng.next_u64();
            pair[0] = (self.normal(r as u32, rng) as f32) * sigma;
            pair[1] = (self.normal((r >> 32) as u32, rng) as f32) * sigma;
        }
        for v in chunks.into_remainder() {
            let r = rng.next_u64();
            *v = (self.normal(r as u32, rng) as f32) * sigma;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::distribution::{ContinuousCDF, Normal};

    /// Moments and the Kolmogorov-Smirnov distance of 10^6 draws against N(0, 1).
    #[test]
    fn ziggurat_is_standard_normal() {
        let z = Ziggurat::new();
        let mut rng = WyRand::stream(7, 1, 2, 3);
        let n = 1_000_000;
        let mut v = vec![0f32; n];
        z.fill(&mut rng, 1.0, &mut v);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((var - 1.0).abs() < 0.005, "variance {var}");
        let mut s: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        s.sort_by(f64::total_cmp);
        let norm = Normal::new(0.0, 1.0).unwrap();
        let d = s
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let c = norm.cdf(x);
                (c - i as f64 / n as f64)
                    .abs()
                    .max((c - (i + 1) as f64 / n as f64).abs())
            })
            .fold(0.0, f64::max);
        // The 99.9 % critical value of the KS statistic is 1.95 / sqrt(n).
        assert!(d < 1.95 / (n as f64).sqrt(), "KS distance {d}");
        let tail = s.iter().filter(|x| x.abs() > 3.0).count() as f64 / n as f64;
        assert!((tail - 0.0026998).abs() < 0.0004, "tail mass {tail}");
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let (mut a, mut b) = (WyRand::stream(1, 2, 3, 4), WyRand::stream(1, 2, 3, 4));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut c = WyRand::stream(1, 2, 3, 5);
        assert_ne!(a.next_u64(), c.next_u64());
    }
}
