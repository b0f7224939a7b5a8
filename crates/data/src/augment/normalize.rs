//! Per-channel normalisation `(x - mean[c]) / std[c]`.

/// Per-channel mean and standard deviation. A single value applies to every channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    /// Channel means (one value = all channels).
    pub mean: Vec<f32>,
    /// Channel standard deviations (one value = all channels).
    pub std: Vec<f32>,
}

impl Normalize {
    /// Fashion-MNIST's pixel statistics: mean 0.2860, std 0.3530.
    pub fn fashion_mnist() -> Self {
        Normalize {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// ImageNet's RGB statistics.
    pub fn imagenet() -> Self {
        Normalize {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Normalises a CHW image in place.
    pub fn apply(&self, data: &mut [f32], channels: usize) {
        let plane = data.len() / channels.max(1);
        for (c, ch) in data.chunks_exact_mut(plane).enumerate() {
            let m = self.mean[c.min(self.mean.len() - 1)];
            let inv = 1.0 / self.std[c.min(self.std.len() - 1)];
            for v in ch {
                *v = (*v - m) * inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_channel() {
        let n = Normalize {
            mean: vec![0.5, 0.0],
            std: vec![0.25, 2.0],
        };
        let mut d = vec![0.5, 1.0, 0.0, 4.0];
        n.apply(&mut d, 2);
        assert_eq!(d, vec![0.0, 2.0, 0.0, 2.0]);
    }
}
