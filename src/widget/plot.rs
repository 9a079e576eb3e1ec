//! Charts drawn with plotters as SVG text (numbers only: no model-derived strings go in).

use plotters::prelude::*;

/// Equal-width bins over `[min, max]` of `values`: (bin edges, counts).
pub fn bins(values: &[f32], count: usize) -> (Vec<f32>, Vec<usize>) {
    let count = count.max(1);
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (vec![0.0, 1.0], vec![0]);
    }
    let width = if hi > lo {
        (hi - lo) / count as f32
    } else {
        1.0
    };
    let mut counts = vec![0; count];
    for &v in values {
        let b = (((v - lo) / width) as usize).min(count - 1);
        counts[b] += 1;
    }
    let edges = (0..=count).map(|i| lo + i as f32 * width).collect();
    (edges, counts)
}

/// A histogram of `values` as an SVG document, `width`×`height` px, with axis captions.
pub fn histogram_svg(values: &[f32], x_label: &str, width: u32, height: u32) -> String {
    let (edges, counts) = bins(values, 40);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let (x0, x1) = (edges[0], *edges.last().unwrap_or(&1.0));
        let top = counts.iter().copied().max().unwrap_or(1).max(1) as f32 * 1.05;
        // Drawing into a string cannot fail for I/O reasons; a failed layout leaves an empty plot.
        let _ = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            let mut chart = ChartBuilder::on(&root)
                .margin(8)
                .x_label_area_size(34)
                .y_label_area_size(44)
                .build_cartesian_2d(x0..x1, 0f32..top)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc(x_label)
                .y_desc("inputs")
                .axis_desc_style(("sans-serif", 13))
                .label_style(("sans-serif", 11))
                .x_label_formatter(&|v| format!("{v:.2}"))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .draw()?;
            chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
                Rectangle::new(
                    [(edges[i], 0.0), (edges[i + 1], c as f32)],
                    RGBColor(70, 110, 200).filled(),
                )
            }))?;
            root.present()?;
            Ok(())
        })();
    }
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_count_every_value_once() {
        let values: Vec<f32> = (0..100).map(|i| i as f32 / 10.0).collect();
        let (edges, counts) = bins(&values, 10);
        assert_eq!(edges.len(), 11);
        assert_eq!(counts.iter().sum::<usize>(), 100);
        assert_eq!(counts, vec![10; 10]);
    }

    #[test]
    fn histogram_is_an_svg_with_one_bar_per_bin() {
        let values: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32).collect();
        let svg = histogram_svg(&values, "max activation", 400, 200);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.matches("<rect").count() >= 40, "{svg}");
        assert!(svg.contains("max activation"));
    }
}
