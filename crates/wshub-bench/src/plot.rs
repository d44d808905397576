//! Line plots as SVG files (plotters, SVG backend only): x/y series with a title, axis labels,
//! a legend and optional vertical markers. Used by `soak` (RSS over time); meant for any
//! scenario that wants a picture (latency vs load, ...).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One named line.
pub(crate) struct Series<'a> {
    pub(crate) name: &'a str,
    pub(crate) points: &'a [(f64, f64)],
}

/// A line chart: every series on the same axes.
pub(crate) struct LinePlot<'a> {
    pub(crate) title: &'a str,
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
    pub(crate) series: Vec<Series<'a>>,
    /// Vertical dashed lines at these x values, with a caption (e.g. "end of warm-up").
    pub(crate) markers: Vec<(f64, &'a str)>,
    /// Start the y axis at zero instead of just below the smallest value.
    pub(crate) y_from_zero: bool,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

impl LinePlot<'_> {
    /// Renders the chart as an SVG document.
    pub(crate) fn to_svg(&self, width: u32, height: u32) -> anyhow::Result<String> {
        let (x_range, y_range) = self.ranges();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(self.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(x_range, y_range.clone())
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc(self.x_label)
                .y_desc(self.y_label)
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(plot_err)?;
            for (i, s) in self.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?
                    .label(s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            for &(x, caption) in &self.markers {
                let style = RGBColor(120, 120, 120).stroke_width(1);
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x, y_range.start), (x, y_range.end)],
                        6,
                        4,
                        style,
                    ))
                    .map_err(plot_err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!(" {caption}"),
                        (x, y_range.end),
                        ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
                    )))
                    .map_err(plot_err)?;
            }
            if !self.series.is_empty() {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(plot_err)?;
            }
            root.present().map_err(plot_err)?;
        }
        Ok(svg)
    }

    /// Renders the chart into an SVG file.
    pub(crate) fn write_svg(&self, path: &Path, width: u32, height: u32) -> anyhow::Result<()> {
        let svg = self.to_svg(width, height)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
    }

    /// Axis ranges covering every point and marker, with a little headroom above and below.
    fn ranges(&self) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        for &(x, _) in &self.markers {
            (x0, x1) = (x0.min(x), x1.max(x));
        }
        if x0 > x1 {
            (x0, x1) = (0.0, 1.0);
        }
        if y0 > y1 {
            (y0, y1) = (0.0, 1.0);
        }
        if self.y_from_zero {
            y0 = y0.min(0.0);
        }
        let x_pad = if x1 > x0 { 0.0 } else { 0.5 };
        let span = (y1 - y0).max(y1.abs() * 0.02).max(1e-9);
        let y_low = if self.y_from_zero && y0 >= 0.0 {
            0.0
        } else {
            y0 - span * 0.1
        };
        ((x0 - x_pad)..(x1 + x_pad), y_low..(y1 + span * 0.15))
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]
    #[test]
    fn csv_series_become_lines() {
        let dir = std::env::temp_dir().join(format!("wshub-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("in.csv");
        std::fs::write(&csv, "wshub,25,100\ntt,25,300\nwshub,50,120\ntt,50,900\n").unwrap();
        let args = super::PlotArgs {
            csv: csv.clone(),
            out: dir.join("out.svg"),
            title: "p99 vs load".into(),
            x_label: "offered load, %".into(),
            y_label: "p99, µs".into(),
        };
        super::from_csv(&args).unwrap();
        let svg = std::fs::read_to_string(&args.out).unwrap();
        assert!(svg.contains("wshub") && svg.contains("tt") && svg.contains("p99 vs load"));
        std::fs::write(&csv, "wshub,25\n").unwrap();
        assert!(super::from_csv(&args).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
    use super::*;

    #[test]
    fn renders_title_labels_legend_and_lines() {
        let rss = [(0.0, 10.0), (1.0, 12.0), (2.0, 12.5)];
        let other = [(0.0, 3.0), (2.0, 4.0)];
        let plot = LinePlot {
            title: "RSS over time",
            x_label: "elapsed (min)",
            y_label: "RSS (MiB)",
            series: vec![
                Series {
                    name: "server RSS",
                    points: &rss,
                },
                Series {
                    name: "other",
                    points: &other,
                },
            ],
            markers: vec![(0.5, "warm-up")],
            y_from_zero: true,
        };
        let svg = plot.to_svg(640, 400).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "RSS over time",
            "elapsed (min)",
            "RSS (MiB)",
            "server RSS",
            "warm-up",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn empty_and_single_point_plots_render() {
        let one = [(5.0, 5.0)];
        for points in [&[][..], &one[..]] {
            let plot = LinePlot {
                title: "t",
                x_label: "x",
                y_label: "y",
                series: vec![Series { name: "s", points }],
                markers: vec![],
                y_from_zero: false,
            };
            assert!(plot.to_svg(300, 200).unwrap().contains("</svg>"));
        }
    }
}

/// `wshub-bench plot`: a CSV of `series,x,y` lines (from `bench/run.sh`) as an SVG line chart,
/// one line per series in order of first appearance.
#[derive(clap::Args)]
pub(crate) struct PlotArgs {
    #[arg(long)]
    csv: std::path::PathBuf,
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long)]
    title: String,
    #[arg(long)]
    x_label: String,
    #[arg(long)]
    y_label: String,
}

pub(crate) fn from_csv(args: &PlotArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.csv)
        .with_context(|| format!("reading {}", args.csv.display()))?;
    let mut names: Vec<String> = Vec::new();
    let mut points: Vec<Vec<(f64, f64)>> = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.split(',');
        let (Some(name), Some(x), Some(y)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("line {}: expected series,x,y", n + 1);
        };
        let (x, y): (f64, f64) = (x.trim().parse()?, y.trim().parse()?);
        let i = match names.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                names.push(name.to_owned());
                points.push(Vec::new());
                names.len() - 1
            }
        };
        points[i].push((x, y));
    }
    LinePlot {
        title: &args.title,
        x_label: &args.x_label,
        y_label: &args.y_label,
        series: names
            .iter()
            .zip(&points)
            .map(|(name, points)| Series { name, points })
            .collect(),
        markers: Vec::new(),
        y_from_zero: true,
    }
    .write_svg(&args.out, 900, 500)
}
