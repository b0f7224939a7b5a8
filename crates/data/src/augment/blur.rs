//! Gaussian blur (torchvision `GaussianBlur`): a separable kernel of odd size with reflect padding.

/// The normalised 1-D Gaussian kernel of `size` taps (odd) at standard deviation `sigma`.
pub fn gaussian_kernel(size: usize, sigma: f32) -> Vec<f32> {
    let half = (size as f32 - 1.0) / 2.0;
    let k: Vec<f32> = (0..size)
        .map(|i| (-0.5 * ((i as f32 - half) / sigma).powi(2)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Reflects an index into `[0, n)` without repeating the edge (`-1 -> 1`, `n -> n - 2`).
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Blurs each `height x width` plane of `data` with `kernel` along rows then columns.
pub fn gaussian_blur(data: &mut [f32], height: usize, width: usize, kernel: &[f32]) {
    let r = (kernel.len() / 2) as isize;
    let mut tmp = vec![0.0f32; height * width];
    for plane in data.chunks_exact_mut(height * width) {
        for y in 0..height {
            for x in 0..width {
                let mut acc = 0.0;
                for (k, w) in kernel.iter().enumerate() {
                    acc += w * plane[y * width + reflect(x as isize + k as isize - r, width)];
                }
                tmp[y * width + x] = acc;
            }
        }
        for y in 0..height {
            for x in 0..width {
                let mut acc = 0.0;
                for (k, w) in kernel.iter().enumerate() {
                    acc += w * tmp[reflect(y as isize + k as isize - r, height) * width + x];
                }
                plane[y * width + x] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        let k = gaussian_kernel(3, 1.0);
        let e = (-0.5f32).exp();
        let expect = [
            e / (1.0 + 2.0 * e),
            1.0 / (1.0 + 2.0 * e),
            e / (1.0 + 2.0 * e),
        ];
        for (a, b) in k.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn blur_3x3_impulse_with_reflect_padding() {
        // kernel [0.25, 0.5, 0.25]; impulse in the corner of a 3x3 image; reflect padding mirrors it
        let k = [0.25, 0.5, 0.25];
        let mut d = vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        gaussian_blur(&mut d, 3, 3, &k);
        // rows: x=0 reads v[1], v[0], v[1] -> 0.5; x=1 -> 0.25; x=2 -> 0: row0 = [0.5, 0.25, 0]
        // columns likewise: out rows = 0.5 * row0, 0.25 * row0, 0
        let expect = [0.25, 0.125, 0.0, 0.125, 0.0625, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(d, expect);
    }

    #[test]
    fn blur_keeps_a_constant_image() {
        let mut d = vec![0.7; 16];
        gaussian_blur(&mut d, 4, 4, &gaussian_kernel(5, 1.3));
        assert!(d.iter().all(|v| (v - 0.7).abs() < 1e-6));
    }
}
