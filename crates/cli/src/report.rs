//! `report.html`: the plots of a run (loss and learning rate, monitor accuracy and collapse
//! diagnostics per epoch, a 2-D embedding of test images by class, the confusion matrix) as
//! inline SVG drawn with `plotters`, in one self-contained file.

use std::path::Path;

use plotters::prelude::*;
use selfsup_data::augment::normalize::Normalize;
use selfsup_data::ImageDataset;
use selfsup_ssl::eval::{extract_features, pca_2d, tsne_2d, ConfusionMatrix};
use selfsup_ssl::Encoder;
use serde_json::Value;

use crate::error::{input, Result};
use crate::runconfig::RunConfig;
use crate::runlog::read_records;

const W: u32 = 640;
const H: u32 = 360;

/// One named line of `(x, y)` points.
pub type Series = (String, Vec<(f64, f64)>);

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// A tick label: integers without a decimal point, other values with up to 4 significant
/// digits.
fn tick(v: &f64) -> String {
    let v = *v;
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        format!("{v:.0}")
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 8) as usize;
        let s = format!("{v:.digits$}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

/// A line chart as SVG text.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let (x0, x1) = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
            let (y0, y1) = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .draw()?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let c = palette(i);
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
                if pts.len() < 40 {
                    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
                }
            }
            if series.len() > 1 {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()?;
            }
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| crate::error::CliError::Input(format!("plot {title}: {e}")))?;
    }
    Ok(svg)
}

/// A scatter plot of 2-D points coloured by class.
pub fn scatter(
    title: &str,
    points: &[[f64; 2]],
    labels: &[usize],
    names: &[String],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, 480)).into_drawing_area();
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let (x0, x1) = range(points.iter().map(|p| p[0]));
            // Room on the right for the legend, so it covers no points.
            let x1 = x1 + 0.3 * (x1 - x0);
            let (y0, y1) = range(points.iter().map(|p| p[1]));
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(25)
                .y_label_area_size(40)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .draw()?;
            let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
            for c in 0..classes {
                let col = palette(c);
                let name = names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| format!("class {c}"));
                chart
                    .draw_series(
                        points
                            .iter()
                            .zip(labels)
                            .filter(|(_, &l)| l == c)
                            .map(|(p, _)| Circle::new((p[0], p[1]), 2, col.filled())),
                    )?
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 5, y), 4, col.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| crate::error::CliError::Input(format!("plot {title}: {e}")))?;
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A confusion matrix as an HTML table shaded by row-normalised counts.
pub fn confusion_html(m: &ConfusionMatrix, names: &[String]) -> String {
    let k = m.classes;
    let mut s = String::from("<table class=\"cm\"><tr><th>true \\ predicted</th>");
    for j in 0..k {
        s.push_str(&format!(
            "<th>{}</th>",
            esc(names.get(j).map_or("", String::as_str))
        ));
    }
    s.push_str("</tr>");
    for i in 0..k {
        let row: u64 = (0..k).map(|j| m.counts[i * k + j]).sum();
        s.push_str(&format!(
            "<tr><th>{}</th>",
            esc(names.get(i).map_or("", String::as_str))
        ));
        for j in 0..k {
            let c = m.counts[i * k + j];
            let f = if row == 0 { 0.0 } else { c as f64 / row as f64 };
            let shade = (255.0 - 200.0 * f) as u8;
            s.push_str(&format!(
                "<td style=\"background: rgb({shade},{shade},255)\">{c}</td>"
            ));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

/// Writes `report.html` from sections of (heading, html).
pub fn write_html(
    dir: &Path,
    title: &str,
    intro: &str,
    sections: &[(String, String)],
) -> Result<()> {
    let mut h = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} table.cm td,table.cm th{{padding:3px 6px;text-align:right;font-size:12px}} pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head><body><h1>{t}</h1>{intro}",
        t = esc(title)
    );
    for (head, body) in sections {
        h.push_str(&format!("<h2>{}</h2>\n{body}\n", esc(head)));
    }
    h.push_str("</body></html>\n");
    let path = dir.join("report.html");
    selfsup_nn::checkpoint::atomic_write(&path, |f| std::io::Write::write_all(f, h.as_bytes()))?;
    Ok(())
}

fn series(
    records: &[serde_json::Map<String, Value>],
    x: &str,
    y: &str,
    only_epochs: bool,
) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| (r.get("event").and_then(Value::as_str) == Some("epoch")) == only_epochs)
        .filter_map(|r| Some((r.get(x)?.as_f64()?, r.get(y)?.as_f64()?)))
        .collect()
}

/// Class names for plots.
pub fn class_names(d: &ImageDataset, classes: usize) -> Vec<String> {
    (0..classes)
        .map(|c| {
            d.class_names
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("{c}"))
        })
        .collect()
}

/// PCA and t-SNE plots of the encoder's features of up to 1000 labelled images.
pub fn embedding_plots(
    encoder: &mut Encoder,
    images: &ImageDataset,
    labels: &[usize],
    normalize: &Normalize,
) -> Result<Vec<(String, String)>> {
    let n = images.len.min(1000);
    let idx: Vec<usize> = (0..n).collect();
    let sub = images.select(&idx)?;
    let feats = extract_features(encoder, &sub, Some(normalize), 500)?;
    let labels = &labels[..n];
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let names = class_names(images, classes);
    let pca = pca_2d(&feats)?;
    let tsne = tsne_2d(&feats, 30.0, 500, 0)?;
    Ok(vec![
        (
            "Embedding of test images: PCA".into(),
            scatter(&format!("PCA of {n} test images"), &pca, labels, &names)?,
        ),
        (
            "Embedding of test images: t-SNE".into(),
            scatter(
                &format!("t-SNE of {n} test images (perplexity 30)"),
                &tsne,
                labels,
                &names,
            )?,
        ),
    ])
}

/// The report of a pretraining run, from its `log.jsonl`.
pub fn pretrain_report(
    dir: &Path,
    cfg: &RunConfig,
    queries: &Option<(&ImageDataset, &[usize], Normalize)>,
    encoder: &mut Encoder,
) -> Result<()> {
    let log = dir.join("log.jsonl");
    if !log.is_file() {
        return input(format!("{} has no log.jsonl", dir.display()));
    }
    let recs = read_records(&log)?;
    let mut sections = Vec::new();
    sections.push((
        "Loss".to_string(),
        line_chart(
            "training loss",
            "step",
            "loss",
            &[("loss".into(), series(&recs, "step", "loss", false))],
        )?,
    ));
    sections.push((
        "Learning rate".to_string(),
        line_chart(
            "learning rate",
            "step",
            "lr",
            &[("lr".into(), series(&recs, "step", "lr", false))],
        )?,
    ));
    let knn = series(&recs, "epoch", "knn_accuracy", true);
    if !knn.is_empty() {
        sections.push((
            "Monitor accuracy per epoch".to_string(),
            line_chart(
                "monitor accuracy (test subset)",
                "epoch",
                "top-1",
                &[
                    ("kNN".into(), knn),
                    (
                        "linear".into(),
                        series(&recs, "epoch", "linear_accuracy", true),
                    ),
                ],
            )?,
        ));
    }
    let std = series(&recs, "epoch", "embedding_std", true);
    if !std.is_empty() {
        let healthy = series(&recs, "epoch", "healthy_std", true);
        sections.push((
            "Collapse diagnostics per epoch".to_string(),
            format!(
                "{}{}{}",
                line_chart(
                    "std of L2-normalised embeddings",
                    "epoch",
                    "std",
                    &[("std".into(), std), ("healthy 1/sqrt(d)".into(), healthy)]
                )?,
                line_chart(
                    "effective rank",
                    "epoch",
                    "rank",
                    &[(
                        "effective rank".into(),
                        series(&recs, "epoch", "effective_rank", true)
                    )]
                )?,
                line_chart(
                    "alignment and uniformity",
                    "epoch",
                    "value",
                    &[
                        (
                            "alignment".into(),
                            series(&recs, "epoch", "alignment", true)
                        ),
                        (
                            "uniformity".into(),
                            series(&recs, "epoch", "uniformity", true)
                        ),
                    ]
                )?
            ),
        ));
    }
    let val = series(&recs, "epoch", "val_loss", true);
    if !val.is_empty() {
        sections.push((
            "Validation loss per epoch".to_string(),
            line_chart(
                "validation loss (nats/token)",
                "epoch",
                "loss",
                &[("validation".into(), val)],
            )?,
        ));
    }
    if let Some((d, l, norm)) = queries {
        sections.extend(embedding_plots(encoder, d, l, norm)?);
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.json")).unwrap_or_default();
    sections.push((
        "metrics.json".into(),
        format!("<pre>{}</pre>", esc(&metrics)),
    ));
    let cfg_text = cfg.to_toml().unwrap_or_default();
    sections.push((
        "config.toml".into(),
        format!("<pre>{}</pre>", esc(&cfg_text)),
    ));
    write_html(
        dir,
        &format!(
            "selfsup pretrain: {} on {}",
            cfg.method,
            cfg.dataset.as_str()
        ),
        "",
        &sections,
    )
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick(&500.0), "500");
        assert_eq!(tick(&0.0), "0");
        assert_eq!(tick(&0.0002), "0.0002");
        assert_eq!(tick(&0.0018), "0.0018");
        assert_eq!(tick(&-1.2), "-1.2");
        assert_eq!(tick(&0.865), "0.865");
    }
}
