//! The training chart of `train`, `demo`, `sweep` and `pretrain` (`loss.png`): training loss,
//! evaluation loss and learning rate by optimizer step, with a title, labelled axes and a
//! legend, drawn by `plotters` into a pixel buffer with an embedded font and encoded by `png`.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// The chart's font: DejaVu Sans Mono (Bitstream Vera license, `assets/fonts/LICENSE`),
/// embedded so that no system font is looked up.
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSansMono.ttf");
/// The name the font is registered under.
const FONT_NAME: &str = "chart-sans";

/// Width and height of the chart in pixels.
pub const CHART_SIZE: (u32, u32) = (960, 540);

const TRAIN_COLOUR: RGBColor = RGBColor(200, 40, 40);
const EVAL_COLOUR: RGBColor = RGBColor(40, 80, 200);
const LR_COLOUR: RGBColor = RGBColor(40, 150, 70);

/// What the chart shows: points `(step, value)`, steps increasing.
#[derive(Debug, Clone, Default)]
pub struct TrainingCurves {
    /// The title line.
    pub title: String,
    /// Mean training loss at each logged step.
    pub train_loss: Vec<(f64, f64)>,
    /// Validation loss at each evaluation.
    pub eval_loss: Vec<(f64, f64)>,
    /// Learning rate at each logged step (drawn against the right axis).
    pub learning_rate: Vec<(f64, f64)>,
}

type ChartError = Box<dyn std::error::Error>;

/// Registers the embedded font once.
fn font_family() -> Result<&'static str, ChartError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(FONT_NAME)
    } else {
        Err("the chart's embedded font could not be read".into())
    }
}

/// The finite points of `points`.
fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// `[low, high]` of `values` with a margin, never empty.
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        low = low.min(v);
        high = high.max(v);
    }
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        low = low.min(0.0);
    }
    if high - low < 1e-12 {
        high = low + 1.0;
    }
    (low, high + (high - low) * 0.05)
}

/// Draws `curves` and writes the chart as a PNG to `path` (atomically: temporary file, then
/// rename).
pub fn write_training_chart(path: &Path, curves: &TrainingCurves) -> Result<(), ChartError> {
    let (width, height) = CHART_SIZE;
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    draw(&mut pixels, curves)?;
    let bytes = encode_png(&pixels, width, height)?;
    Ok(lora_burn::lora_hf::write_atomic(path, &bytes)?)
}

/// Draws the chart into an RGB buffer of [`CHART_SIZE`].
fn draw(pixels: &mut [u8], curves: &TrainingCurves) -> Result<(), ChartError> {
    let family = font_family()?;
    let train = finite(&curves.train_loss);
    let eval = finite(&curves.eval_loss);
    let lr = finite(&curves.learning_rate);
    let (x_low, x_high) = span(train.iter().chain(&eval).chain(&lr).map(|p| p.0), false);
    let (y_low, y_high) = span(train.iter().chain(&eval).map(|p| p.1), true);
    let (lr_low, lr_high) = span(lr.iter().map(|p| p.1), true);

    let root = BitMapBackend::with_buffer(pixels, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&curves.title, (family, 22))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(70)
        .right_y_label_area_size(80)
        .build_cartesian_2d(x_low..x_high, y_low..y_high)?
        .set_secondary_coord(x_low..x_high, lr_low..lr_high);
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("loss (cross-entropy per target token)")
        .label_style((family, 14))
        .axis_desc_style((family, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("learning rate")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .label_style((family, 14))
        .axis_desc_style((family, 15))
        .draw()?;
    chart
        .draw_series(LineSeries::new(train, TRAIN_COLOUR.stroke_width(2)))?
        .label("train loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], TRAIN_COLOUR.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(eval.clone(), EVAL_COLOUR.stroke_width(2)))?
        .label("eval loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], EVAL_COLOUR.stroke_width(2)));
    chart.draw_series(
        eval.iter()
            .map(|&point| Circle::new(point, 3, EVAL_COLOUR.filled())),
    )?;
    chart
        .draw_secondary_series(LineSeries::new(lr, LR_COLOUR.stroke_width(2)))?
        .label("learning rate (right axis)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], LR_COLOUR.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((family, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// An RGB8 PNG of `rgb` (rows top to bottom), encoded by the `png` crate.
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded RGB pixels and size of a PNG file.
    fn read_png(path: &Path) -> (Vec<u8>, u32, u32) {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        pixels.truncate(info.buffer_size());
        (pixels, info.width, info.height)
    }

    fn count(pixels: &[u8], colour: RGBColor) -> usize {
        pixels
            .chunks_exact(3)
            .filter(|p| *p == [colour.0, colour.1, colour.2])
            .count()
    }

    #[test]
    fn the_chart_has_its_size_its_three_curves_and_text() {
        let path = std::env::temp_dir().join(format!("chart-{}.png", std::process::id()));
        let steps = |every: usize| (0..=200).step_by(every).map(|s| s as f64);
        let curves = TrainingCurves {
            title: "LoRA fine-tuning".into(),
            train_loss: steps(10).map(|s| (s, 3.0 / (1.0 + s / 20.0))).collect(),
            eval_loss: steps(50).map(|s| (s, 3.2 / (1.0 + s / 25.0))).collect(),
            learning_rate: steps(10).map(|s| (s, 1e-3 * (1.0 - s / 200.0))).collect(),
        };
        write_training_chart(&path, &curves).unwrap();
        let (pixels, width, height) = read_png(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!((width, height), CHART_SIZE);
        // Each curve is drawn (and its legend line).
        for colour in [TRAIN_COLOUR, EVAL_COLOUR, LR_COLOUR] {
            assert!(count(&pixels, colour) > 200, "{colour:?} barely drawn");
        }
        // Not blank: besides the white background, the curves and the light grid, dark pixels
        // of the axes and the anti-aliased text (title, axis names, tick labels, legend).
        let dark = pixels
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&c| c < 100))
            .count();
        let white = count(&pixels, WHITE);
        assert!(dark > 3000, "only {dark} dark pixels");
        assert!(white < pixels.len() / 3 * 98 / 100, "nearly all white");
        assert!(white > pixels.len() / 3 / 2, "mostly not background");
    }

    #[test]
    fn an_empty_or_non_finite_history_still_gives_a_chart() {
        let path = std::env::temp_dir().join(format!("chart-empty-{}.png", std::process::id()));
        let curves = TrainingCurves {
            title: "nothing yet".into(),
            train_loss: vec![(1.0, f64::NAN), (2.0, f64::INFINITY)],
            ..TrainingCurves::default()
        };
        write_training_chart(&path, &curves).unwrap();
        let (_, width, height) = read_png(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!((width, height), CHART_SIZE);
    }
}
