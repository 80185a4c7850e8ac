//! A loss-curve picture as PNG for `train`, `demo` and `pretrain`: drawn here, encoded by the
//! `png` crate.

use std::path::Path;

/// One curve: its name is only for the caller; its colour is RGB.
#[derive(Debug, Clone)]
pub struct Curve {
    /// (x, y) points, x increasing.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub rgb: [u8; 3],
}

/// Draws curves on a white `width × height` canvas with axes and writes a PNG (atomically:
/// temporary file, then rename).
pub fn write_curves_png(
    path: &Path,
    curves: &[Curve],
    width: usize,
    height: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (width, height) = (width.max(32), height.max(32));
    let mut pixels = vec![255u8; width * height * 3];
    let margin = 24usize;
    let points = curves.iter().flat_map(|c| c.points.iter());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x_min = x_min.min(*x);
        x_max = x_max.max(*x);
        y_min = y_min.min(*y);
        y_max = y_max.max(*y);
    }
    if !x_min.is_finite() {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    y_min = y_min.min(0.0);
    let x_span = (x_max - x_min).max(1e-12);
    let y_span = (y_max - y_min).max(1e-12);
    let (plot_w, plot_h) = (width - 2 * margin, height - 2 * margin);
    let to_pixel = |x: f64, y: f64| {
        let px = margin as f64 + (x - x_min) / x_span * plot_w as f64;
        let py = (height - margin) as f64 - (y - y_min) / y_span * plot_h as f64;
        (px, py)
    };
    let mut put = |x: i64, y: i64, rgb: [u8; 3]| {
        if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
            let i = (y as usize * width + x as usize) * 3;
            pixels[i..i + 3].copy_from_slice(&rgb);
        }
    };
    for x in margin..width - margin {
        put(x as i64, (height - margin) as i64, [0, 0, 0]);
    }
    for y in margin..height - margin {
        put(margin as i64, y as i64, [0, 0, 0]);
    }
    for curve in curves {
        for pair in curve.points.windows(2) {
            let (a, b) = (
                to_pixel(pair[0].0, pair[0].1),
                to_pixel(pair[1].0, pair[1].1),
            );
            let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
            for s in 0..=steps {
                let t = s as f64 / steps as f64;
                let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
                    put(x.round() as i64 + dx, y.round() as i64 + dy, curve.rgb);
                }
            }
        }
    }
    let bytes = encode_png(&pixels, width, height)?;
    Ok(lora_burn::lora_hf::write_atomic(path, &bytes)?)
}

/// An RGB8 PNG of `rgb` (rows top to bottom), encoded by the `png` crate.
fn encode_png(rgb: &[u8], width: usize, height: usize) -> Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_png_file() {
        use super::{write_curves_png, Curve};
        let path = std::env::temp_dir().join(format!("loss-{}.png", std::process::id()));
        let train = Curve {
            points: vec![(0.0, 3.0), (1.0, 2.0), (2.0, 1.5)],
            rgb: [200, 40, 40],
        };
        write_curves_png(&path, &[train], 320, 200).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (320, 200));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        std::fs::remove_file(path).unwrap();
    }
}
