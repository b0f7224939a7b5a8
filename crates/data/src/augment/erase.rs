//! Pixel-level random transforms: gaussian noise and random erasing (torchvision `RandomErasing`).

use selfsup_tensor::rng::Philox;

/// Adds `N(0, std^2)` noise to every value, then clamps to `[0, 1]` when `clamp`.
pub fn gaussian_noise(data: &mut [f32], std: f32, clamp: bool, rng: &mut Philox) {
    for v in data {
        *v += std * rng.normal_f64() as f32;
        if clamp {
            *v = v.clamp(0.0, 1.0);
        }
    }
}

/// Parameters of random erasing: the erased rectangle's area fraction and aspect-ratio ranges,
/// and the value written (torchvision defaults: scale `(0.02, 0.33)`, ratio `(0.3, 3.3)`, value 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomErasing {
    /// Probability of erasing at all.
    pub p: f64,
    /// Range of the erased area as a fraction of the image.
    pub scale: (f64, f64),
    /// Range of the aspect ratio, sampled log-uniformly.
    pub ratio: (f64, f64),
    /// Value written into the rectangle (after normalisation, 0 is the mean).
    pub value: f32,
}

impl Default for RandomErasing {
    fn default() -> Self {
        RandomErasing {
            p: 0.5,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: 0.0,
        }
    }
}

impl RandomErasing {
    /// Draws the rectangle `(top, left, height, width)` like torchvision: 10 attempts, `None` if
    /// none fits (the image is then left unchanged).
    pub fn sample(
        &self,
        height: usize,
        width: usize,
        rng: &mut Philox,
    ) -> Option<(usize, usize, usize, usize)> {
        let area = (height * width) as f64;
        let (l0, l1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.uniform_range(self.scale.0, self.scale.1);
            let aspect = rng.uniform_range(l0, l1).exp();
            let h = (target * aspect).sqrt().round_ties_even() as usize;
            let w = (target / aspect).sqrt().round_ties_even() as usize;
            if !(h < height && w < width) || h == 0 || w == 0 {
                continue;
            }
            let top = rng.below((height - h + 1) as u64) as usize;
            let left = rng.below((width - w + 1) as u64) as usize;
            return Some((top, left, h, w));
        }
        None
    }

    /// With probability `p`, erases one random rectangle in every channel of a CHW image.
    pub fn apply(&self, data: &mut [f32], height: usize, width: usize, rng: &mut Philox) {
        if !rng.bernoulli(self.p) {
            return;
        }
        if let Some(r) = self.sample(height, width, rng) {
            erase(data, height, width, r, self.value);
        }
    }
}

/// Writes `value` into the rectangle `(top, left, h, w)` of every plane.
pub fn erase(
    data: &mut [f32],
    height: usize,
    width: usize,
    rect: (usize, usize, usize, usize),
    value: f32,
) {
    let (top, left, h, w) = rect;
    for plane in data.chunks_exact_mut(height * width) {
        for y in top..top + h {
            plane[y * width + left..y * width + left + w].fill(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erase_writes_the_rectangle_in_every_channel() {
        let mut d = vec![1.0; 2 * 9];
        erase(&mut d, 3, 3, (1, 0, 2, 2), 0.0);
        let plane = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        assert_eq!(&d[..9], &plane);
        assert_eq!(&d[9..], &plane);
    }

    #[test]
    fn erased_rectangles_fit_and_follow_the_scale() {
        let e = RandomErasing::default();
        let mut rng = Philox::new(5, 0);
        let mut sum = 0.0;
        let mut n = 0;
        for _ in 0..2000 {
            if let Some((t, l, h, w)) = e.sample(32, 32, &mut rng) {
                assert!(t + h <= 32 && l + w <= 32 && h < 32 && w < 32);
                sum += (h * w) as f64 / 1024.0;
                n += 1;
            }
        }
        let mean = sum / n as f64;
        assert!(n > 1900 && (mean - 0.175).abs() < 0.03, "{n} {mean}");
    }

    #[test]
    fn noise_has_the_requested_std() {
        let mut d = vec![0.0f32; 20000];
        gaussian_noise(&mut d, 0.1, false, &mut Philox::new(1, 1));
        let var = d.iter().map(|v| (v * v) as f64).sum::<f64>() / d.len() as f64;
        assert!((var.sqrt() - 0.1).abs() < 0.003, "{}", var.sqrt());
    }
}
