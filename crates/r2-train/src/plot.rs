//! The deferral curves of an [`EvalReport`] as an SVG plot: mean cost per query (USD) across, mean
//! true quality up; one line per router (its deferral curve) with its routed points, and a marker
//! per single model.

use std::path::Path;

use plotters::prelude::*;

use crate::eval::{CurveKind, EvalReport};

/// Writes the plot to `path` (SVG).
pub fn plot_svg(report: &EvalReport, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let (mut c_lo, mut c_hi, mut q_lo, mut q_hi) = (f64::INFINITY, 0.0f64, 1.0f64, 0.0f64);
    for c in &report.curves {
        for p in &c.points {
            c_lo = c_lo.min(p.cost);
            c_hi = c_hi.max(p.cost);
            q_lo = q_lo.min(p.quality);
            q_hi = q_hi.max(p.quality);
        }
    }
    if !c_lo.is_finite() {
        return Err(err(&"nothing to plot"));
    }
    let c_pad = ((c_hi - c_lo) * 0.06).max(1e-12);
    let q_pad = ((q_hi - q_lo) * 0.05).max(0.01);
    let x_range = (c_lo - c_pad).max(0.0)..c_hi + c_pad;
    let y_range = (q_lo - q_pad).max(0.0)..(q_hi + q_pad).min(1.0);

    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Deferral curves: {} queries", report.queries),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("mean cost per query (USD)")
        .y_desc("mean quality")
        .x_label_formatter(&|v| format!("{v:.2e}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(|e| err(&e))?;

    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(214, 39, 40),
        RGBColor(120, 120, 120),
    ];
    let routers = report.curves.iter().filter(|c| c.kind != CurveKind::Single);
    for (i, c) in routers.enumerate() {
        let color = palette[i % palette.len()];
        let style = if matches!(c.kind, CurveKind::Oracle | CurveKind::OracleUnlimited) {
            color.stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(c.curve.iter().map(|p| (p[0], p[1])), style))
            .map_err(|e| err(&e))?
            .label(format!("{} (AUDC {:.4})", c.name, c.audc))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                c.points
                    .iter()
                    .map(|p| Circle::new((p.cost, p.quality), 2, color.mix(0.5).filled())),
            )
            .map_err(|e| err(&e))?;
    }
    let singles: Vec<_> = report
        .curves
        .iter()
        .filter(|c| c.kind == CurveKind::Single)
        .collect();
    if !singles.is_empty() {
        chart
            .draw_series(singles.iter().map(|c| {
                let p = c.points[0];
                Cross::new((p.cost, p.quality), 5, BLACK.stroke_width(2))
            }))
            .map_err(|e| err(&e))?
            .label("single models (no budget)")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
        chart
            .draw_series(singles.iter().map(|c| {
                let p = c.points[0];
                EmptyElement::at((p.cost, p.quality))
                    + Text::new(
                        c.model.clone().unwrap_or_default(),
                        (6, 4),
                        ("sans-serif", 11).into_font().color(&BLACK.mix(0.7)),
                    )
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
