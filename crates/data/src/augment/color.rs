//! Colour transforms on `[0, 1]` CHW images: brightness, contrast, saturation and hue jitter,
//! grayscale conversion and solarisation, following torchvision's functional definitions.
//!
//! Grayscale-aware: on a 1-channel image saturation, hue and grayscale are no-ops, and contrast
//! blends with the image's own mean.

use selfsup_tensor::rng::Philox;

/// Luma weights torchvision uses for `rgb_to_grayscale`.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

fn luma_plane(data: &[f32], plane: usize) -> Vec<f32> {
    let (r, rest) = data.split_at(plane);
    let (g, b) = rest.split_at(plane);
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((r, g), b)| LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)
        .collect()
}

/// Multiplies by `factor`, clamped to `[0, 1]`.
pub fn adjust_brightness(data: &mut [f32], factor: f32) {
    for v in data {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// Blends with the mean gray level: `factor * x + (1 - factor) * mean`, clamped.
pub fn adjust_contrast(data: &mut [f32], channels: usize, factor: f32) {
    let plane = data.len() / channels.max(1);
    let mean = if channels == 3 {
        luma_plane(data, plane).iter().sum::<f32>() / plane as f32
    } else {
        data.iter().sum::<f32>() / data.len() as f32
    };
    for v in data {
        *v = (factor * *v + (1.0 - factor) * mean).clamp(0.0, 1.0);
    }
}

/// Blends with the grayscale image: `factor * x + (1 - factor) * gray`, clamped. No-op unless RGB.
pub fn adjust_saturation(data: &mut [f32], channels: usize, factor: f32) {
    if channels != 3 {
        return;
    }
    let plane = data.len() / 3;
    let gray = luma_plane(data, plane);
    for ch in data.chunks_exact_mut(plane) {
        for (v, g) in ch.iter_mut().zip(&gray) {
            *v = (factor * *v + (1.0 - factor) * g).clamp(0.0, 1.0);
        }
    }
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    let s = if maxc == minc { 0.0 } else { cr / maxc };
    if cr == 0.0 {
        return (0.0, s, maxc);
    }
    let (rc, gc, bc) = ((maxc - r) / cr, (maxc - g) / cr, (maxc - b) / cr);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0).rem_euclid(1.0), s, maxc)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let i = (i as i32).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Shifts the hue by `factor` (in turns, `[-0.5, 0.5]`). No-op unless RGB.
pub fn adjust_hue(data: &mut [f32], channels: usize, factor: f32) {
    if channels != 3 {
        return;
    }
    let plane = data.len() / 3;
    for i in 0..plane {
        let (h, s, v) = rgb_to_hsv(data[i], data[plane + i], data[2 * plane + i]);
        let (r, g, b) = hsv_to_rgb((h + factor).rem_euclid(1.0), s, v);
        data[i] = r;
        data[plane + i] = g;
        data[2 * plane + i] = b;
    }
}

/// Replaces every channel by the luma (an RGB image stays 3-channel). No-op unless RGB.
pub fn to_grayscale(data: &mut [f32], channels: usize) {
    if channels != 3 {
        return;
    }
    let plane = data.len() / 3;
    let gray = luma_plane(data, plane);
    for ch in data.chunks_exact_mut(plane) {
        ch.copy_from_slice(&gray);
    }
}

/// Inverts values at or above `threshold`: `x >= t ? 1 - x : x`.
pub fn solarize(data: &mut [f32], threshold: f32) {
    for v in data {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}

/// Random colour jitter (torchvision `ColorJitter`): each enabled adjustment draws its factor
/// uniformly from its range, and the four are applied in a random order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorJitter {
    /// Brightness factor range, e.g. `(0.6, 1.4)`; `None` disables.
    pub brightness: Option<(f32, f32)>,
    /// Contrast factor range; `None` disables.
    pub contrast: Option<(f32, f32)>,
    /// Saturation factor range; `None` disables.
    pub saturation: Option<(f32, f32)>,
    /// Hue shift range within `[-0.5, 0.5]`; `None` disables.
    pub hue: Option<(f32, f32)>,
}

impl ColorJitter {
    /// torchvision's scalar form: `ColorJitter(b, c, s, h)` means factors in `[max(0, 1-b), 1+b]`
    /// (same for contrast, saturation) and hue shifts in `[-h, h]`; zero disables.
    pub fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> Self {
        let around_one = |x: f32| {
            if x > 0.0 {
                Some(((1.0 - x).max(0.0), 1.0 + x))
            } else {
                None
            }
        };
        ColorJitter {
            brightness: around_one(brightness),
            contrast: around_one(contrast),
            saturation: around_one(saturation),
            hue: if hue > 0.0 {
                Some((-hue.min(0.5), hue.min(0.5)))
            } else {
                None
            },
        }
    }

    /// Applies one random jitter to a CHW `[0, 1]` image.
    pub fn apply(&self, data: &mut [f32], channels: usize, rng: &mut Philox) {
        let mut order = [0usize, 1, 2, 3];
        rng.shuffle(&mut order);
        let mut draw = |r: Option<(f32, f32)>| {
            r.map(|(lo, hi)| rng.uniform_range(lo as f64, hi as f64) as f32)
        };
        let f = [
            draw(self.brightness),
            draw(self.contrast),
            draw(self.saturation),
            draw(self.hue),
        ];
        for k in order {
            match (k, f[k]) {
                (0, Some(x)) => adjust_brightness(data, x),
                (1, Some(x)) => adjust_contrast(data, channels, x),
                (2, Some(x)) => adjust_saturation(data, channels, x),
                (3, Some(x)) => adjust_hue(data, channels, x),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn brightness_scales_and_clamps() {
        let mut d = vec![0.1, 0.5, 0.8];
        adjust_brightness(&mut d, 1.5);
        close(&d, &[0.15, 0.75, 1.0]);
    }

    #[test]
    fn contrast_on_grayscale_blends_with_the_mean() {
        // 2x2 gray image, mean 0.5, factor 0.5: x -> 0.5x + 0.25
        let mut d = vec![0.0, 0.2, 0.8, 1.0];
        adjust_contrast(&mut d, 1, 0.5);
        close(&d, &[0.25, 0.35, 0.65, 0.75]);
    }

    #[test]
    fn saturation_and_hue_are_noops_on_one_channel() {
        let mut d = vec![0.1, 0.9, 0.3];
        adjust_saturation(&mut d, 1, 0.0);
        adjust_hue(&mut d, 1, 0.3);
        to_grayscale(&mut d, 1);
        close(&d, &[0.1, 0.9, 0.3]);
    }

    #[test]
    fn saturation_zero_is_grayscale() {
        // one RGB pixel (1, 0, 0): luma 0.2989
        let mut d = vec![1.0, 0.0, 0.0];
        adjust_saturation(&mut d, 3, 0.0);
        close(&d, &[0.2989, 0.2989, 0.2989]);
    }

    #[test]
    fn hue_shift_by_a_third_turns_red_into_green() {
        // two pixels, CHW planes r, g, b: px0 = (1, 0, 0), px1 = (0.5, 0.5, 0.5)
        let mut d = vec![1.0, 0.5, 0.0, 0.5, 0.0, 0.5];
        adjust_hue(&mut d, 3, 1.0 / 3.0);
        close(&d, &[0.0, 0.5, 1.0, 0.5, 0.0, 0.5]); // px0 (0,1,0); gray unchanged
    }

    #[test]
    fn hsv_round_trip() {
        for &(r, g, b) in &[
            (0.2, 0.4, 0.6),
            (0.9, 0.1, 0.5),
            (0.3, 0.3, 0.1),
            (0.0, 0.0, 0.0),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            close(&[r, g, b], &[r2, g2, b2]);
        }
    }

    #[test]
    fn solarize_inverts_bright_values() {
        let mut d = vec![0.2, 0.5, 0.9];
        solarize(&mut d, 0.5);
        close(&d, &[0.2, 0.5, 0.1]);
    }

    #[test]
    fn jitter_factors_stay_in_range() {
        let j = ColorJitter::new(0.4, 0.0, 0.0, 0.0);
        let mut rng = Philox::new(3, 0);
        for _ in 0..200 {
            let mut d = vec![0.5];
            j.apply(&mut d, 1, &mut rng);
            assert!(d[0] >= 0.3 - 1e-6 && d[0] <= 0.7 + 1e-6, "{d:?}");
        }
    }
}
