//! Geometric transforms: horizontal flip, rotation by multiples of 90 degrees, rotation by an
//! arbitrary (small) angle.

use crate::dataset::Image;

/// Mirrors every row in place (left-right flip).
pub fn hflip(img: &mut Image) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Rotates counter-clockwise by `k * 90` degrees (like `torch.rot90(img, k, dims=[-2, -1])`);
/// an odd `k` swaps height and width.
pub fn rot90(img: &Image, k: usize) -> Image {
    let (c, h, w) = (img.channels, img.height, img.width);
    match k % 4 {
        0 => img.clone(),
        2 => {
            let mut out = img.clone();
            for p in out.data.chunks_exact_mut(h * w) {
                p.reverse();
            }
            out
        }
        k => {
            // out has shape (w, h): k = 1: out[i][j] = in[j][w-1-i]; k = 3: out[i][j] = in[h-1-j][i]
            let mut out = Image::zeros(c, w, h);
            for ch in 0..c {
                let src = &img.data[ch * h * w..(ch + 1) * h * w];
                let dst = &mut out.data[ch * h * w..(ch + 1) * h * w];
                for i in 0..w {
                    for j in 0..h {
                        dst[i * h + j] = if k == 1 {
                            src[j * w + (w - 1 - i)]
                        } else {
                            src[(h - 1 - j) * w + i]
                        };
                    }
                }
            }
            out
        }
    }
}

/// Rotates counter-clockwise by `degrees` about the image centre, sampling bilinearly; pixels
/// that come from outside the image get `fill` (torchvision `rotate` with `expand=False`).
pub fn rotate(img: &Image, degrees: f32, fill: f32) -> Image {
    let (c, h, w) = (img.channels, img.height, img.width);
    let mut out = Image::zeros(c, h, w);
    rotate_into(&img.data, c, h, w, degrees, fill, &mut out.data);
    out
}

/// [`rotate`] from a CHW slice into `out`.
pub(crate) fn rotate_into(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    degrees: f32,
    fill: f32,
    out: &mut [f32],
) {
    let (s, co) = (degrees.to_radians() as f64).sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let get = |y: isize, x: isize| -> f32 {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                fill
            } else {
                plane[y as usize * w + x as usize]
            }
        };
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let sx = cx + dx * co - dy * s;
                let sy = cy + dx * s + dy * co;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let v = if fx.abs() < 1e-6 && fy.abs() < 1e-6 {
                    get(y0, x0)
                } else {
                    let top = get(y0, x0) * (1.0 - fx) + get(y0, x0 + 1) * fx;
                    let bot = get(y0 + 1, x0) * (1.0 - fx) + get(y0 + 1, x0 + 1) * fx;
                    top * (1.0 - fy) + bot * fy
                };
                out[(ch * h + y) * w + x] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img3() -> Image {
        Image::new((1..=9).map(|x| x as f32).collect(), 1, 3, 3)
    }

    #[test]
    fn hflip_3x3() {
        let mut i = img3();
        hflip(&mut i);
        assert_eq!(i.data, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0, 9.0, 8.0, 7.0]);
    }

    #[test]
    fn rot90_matches_numpy() {
        // np.rot90([[1,2,3],[4,5,6],[7,8,9]]) == [[3,6,9],[2,5,8],[1,4,7]]
        assert_eq!(
            rot90(&img3(), 1).data,
            vec![3.0, 6.0, 9.0, 2.0, 5.0, 8.0, 1.0, 4.0, 7.0]
        );
        assert_eq!(
            rot90(&img3(), 2).data,
            vec![9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
        );
        assert_eq!(
            rot90(&img3(), 3).data,
            vec![7.0, 4.0, 1.0, 8.0, 5.0, 2.0, 9.0, 6.0, 3.0]
        );
        let r = Image::new((0..6).map(|x| x as f32).collect(), 1, 2, 3); // [[0,1,2],[3,4,5]]
        let o = rot90(&r, 1); // [[2,5],[1,4],[0,3]]
        assert_eq!((o.height, o.width), (3, 2));
        assert_eq!(o.data, vec![2.0, 5.0, 1.0, 4.0, 0.0, 3.0]);
    }

    #[test]
    fn rotate_by_90_degrees_equals_rot90() {
        let r = rotate(&img3(), 90.0, 0.0);
        for (a, b) in r.data.iter().zip(rot90(&img3(), 1).data) {
            assert!((a - b).abs() < 1e-4, "{:?}", r.data);
        }
    }

    #[test]
    fn small_rotation_keeps_the_centre_and_fills_corners() {
        let r = rotate(&img3(), 45.0, -1.0);
        assert!((r.at(0, 1, 1) - 5.0).abs() < 1e-5);
        // the top-left output pixel comes from (x, y) = (1, 1 - sqrt2): weight sqrt2 - 1 on the fill
        // (row -1), 2 - sqrt2 on pixel (0, 1) = 2
        let expect = -(2f32.sqrt() - 1.0) + 2.0 * (2.0 - 2f32.sqrt());
        assert!((r.at(0, 0, 0) - expect).abs() < 1e-4, "{}", r.at(0, 0, 0));
    }
}
