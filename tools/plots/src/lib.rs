//! The benchmark plots of `docs/benchmarks.md` ("Plots"), drawn as SVG from
//! the committed data in `docs/plots/*.json`.
//!
//! The data is written by `conformance/tools/plots/collect.sh` (which runs
//! the benchmarks); this crate only reads it, so `cargo run -p rtm-plots`
//! redraws every plot in a second without running anything. The SVG backend
//! of `plotters` writes text as `<text>` elements that the viewer lays out:
//! no font is loaded and no system library is needed.
//!
//! Every data file has the same shape ([`Dataset`]): series of points, each
//! point with the figure of every run; a plot draws the median of the runs
//! (points joined by lines) and their spread (min–max bars).

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

/// What the functions of this crate return on failure.
pub type Error = Box<dyn StdError + Send + Sync + 'static>;

/// The plots: data file, SVG file and the function that draws one from the other.
pub const PLOTS: [(&str, &str, Renderer); 3] = [
    ("idle-memory.json", "idle-memory.svg", render_idle_memory),
    (
        "cluster-latency.json",
        "cluster-latency.svg",
        render_cluster_latency,
    ),
    (
        "inproc-scaling.json",
        "inproc-scaling.svg",
        render_inproc_scaling,
    ),
];

/// Draws one [`Dataset`] into an SVG file.
pub type Renderer = fn(&Dataset, &Path) -> Result<(), Error>;

/// One data file (`docs/plots/*.json`), as `collect.sh` writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Dataset {
    /// Which plot (`idle-memory`, `cluster-latency`, `inproc-scaling`).
    pub plot: String,
    /// The day the figures were measured (`YYYY-MM-DD`).
    pub date: String,
    /// The commit the measured binaries were built from (`+dirty`: with local changes).
    pub commit: String,
    /// The machine (CPUs, kernel).
    pub machine: String,
    /// The command that measured the points (with placeholders for what varies).
    #[serde(default)]
    pub command: String,
    /// Runs per point that were asked for.
    #[serde(default)]
    pub runs_per_point: usize,
    /// Whether every point got all its runs.
    #[serde(default)]
    pub complete: bool,
    /// Caveats and how the figure is measured.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The series of the plot.
    pub series: Vec<Series>,
}

/// One line of a plot.
#[derive(Debug, Clone, Deserialize)]
pub struct Series {
    /// A stable name for the code (`project`, `p99`, `calls`, …).
    pub key: String,
    /// The legend's label.
    pub name: String,
    /// The unit of the runs' figures.
    #[serde(default)]
    pub unit: String,
    /// The points, by increasing `x`.
    pub points: Vec<Point>,
}

/// One point: an `x` and the figure of each run there.
#[derive(Debug, Clone, Deserialize)]
pub struct Point {
    /// Connections, offered rate or worker threads.
    pub x: f64,
    /// The figure of each run.
    pub runs: Vec<f64>,
    /// The command of this point.
    #[serde(default)]
    pub command: String,
}

/// Median, smallest and largest of a point's runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest run.
    pub min: f64,
    /// The largest run.
    pub max: f64,
}

impl Point {
    /// The median and the range of the runs; `None` without runs.
    pub fn summary(&self) -> Option<Summary> {
        let mut runs: Vec<f64> = self
            .runs
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if runs.is_empty() {
            return None;
        }
        runs.sort_by(f64::total_cmp);
        let n = runs.len();
        let median = if n % 2 == 1 {
            runs[n / 2]
        } else {
            (runs[n / 2 - 1] + runs[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: runs[0],
            max: runs[n - 1],
        })
    }
}

impl Dataset {
    /// Reads a data file.
    pub fn load(path: &Path) -> Result<Dataset, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()).into())
    }

    /// The series with this key.
    pub fn series(&self, key: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.key == key)
    }

    /// The line under every plot: when, what, where.
    fn footer(&self) -> String {
        let runs = match self.complete {
            true => format!("median of {} runs per point", self.runs_per_point),
            false => format!(
                "median of up to {} runs per point (some points have fewer)",
                self.runs_per_point
            ),
        };
        format!(
            "{}, commit {}; {runs}, bars: min to max; {}, shared with other work: compare series within one run",
            self.date, self.commit, self.machine
        )
    }
}

/// The default folder of the data and the plots: `docs/plots` of this repository.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plots")
}

/// Draws every plot of [`PLOTS`] from `data_dir` into `out_dir` (created if
/// missing); returns the SVG files written.
pub fn render_all(data_dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(out_dir)
        .map_err(|err| format!("cannot create {}: {err}", out_dir.display()))?;
    let mut written = Vec::new();
    for (json, svg, render) in PLOTS {
        let data = Dataset::load(&data_dir.join(json))?;
        let out = out_dir.join(svg);
        render(&data, &out).map_err(|err| format!("{}: {err}", out.display()))?;
        written.push(out);
    }
    Ok(written)
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
const FOOTER: u32 = 56;
const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];
const GREY: RGBColor = RGBColor(0x70, 0x70, 0x70);

/// The plot's area and the footer's, the footer written.
fn canvas<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    data: &Dataset,
    extra: &str,
) -> Result<DrawingArea<SVGBackend<'a>, Shift>, Error> {
    root.fill(&WHITE)?;
    let (plot, footer) = root.split_vertically(HEIGHT - FOOTER);
    let style = ("sans-serif", 13).into_font().color(&GREY);
    footer.draw(&Text::new(data.footer(), (12, 8), style.clone()))?;
    footer.draw(&Text::new(extra.to_owned(), (12, 28), style))?;
    Ok(plot)
}

/// Medians joined by a line, a dot per median, a min–max bar per point, the
/// median written beside each dot; the legend entry `label`.
fn draw_medians<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    points: &[(f64, Summary)],
    color: RGBColor,
    label: &str,
    value_label: impl Fn(f64) -> String,
    label_offset: (i32, i32),
) -> Result<(), Error>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let line = color.stroke_width(2);
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|(x, s)| (*x, s.median)),
            line,
        ))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
    chart.draw_series(points.iter().map(|(x, s)| {
        ErrorBar::new_vertical(*x, s.min, s.median, s.max, color.stroke_width(1), 8)
    }))?;
    chart.draw_series(
        points
            .iter()
            .map(|(x, s)| Circle::new((*x, s.median), 4, color.filled())),
    )?;
    let font = ("sans-serif", 12).into_font().color(&color);
    chart.draw_series(points.iter().map(|(x, s)| {
        EmptyElement::at((*x, s.median))
            + Text::new(value_label(s.median), label_offset, font.clone())
    }))?;
    Ok(())
}

/// The medians of a series, in the plot's units (`scale` divides x and y).
fn summaries(series: &Series, x_scale: f64, y_scale: f64) -> Vec<(f64, Summary)> {
    series
        .points
        .iter()
        .filter_map(|p| {
            p.summary().map(|s| {
                (
                    p.x / x_scale,
                    Summary {
                        median: s.median / y_scale,
                        min: s.min / y_scale,
                        max: s.max / y_scale,
                    },
                )
            })
        })
        .collect()
}

fn y_max(all: &[&[(f64, Summary)]]) -> f64 {
    all.iter()
        .flat_map(|s| s.iter().map(|(_, s)| s.max))
        .fold(0.0, f64::max)
}

fn x_bounds(all: &[&[(f64, Summary)]]) -> (f64, f64) {
    all.iter()
        .flat_map(|s| s.iter().map(|(x, _)| *x))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), Error>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(GREY)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn thousands(v: f64) -> String {
    if v >= 1000.0 {
        let k = v / 1000.0;
        if (k - k.round()).abs() < 1e-9 {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else {
        format!("{v:.0}")
    }
}

/// Idle memory per connection against connections, log-scale x.
pub fn render_idle_memory(data: &Dataset, out: &Path) -> Result<(), Error> {
    let series: Vec<(&Series, Vec<(f64, Summary)>)> = data
        .series
        .iter()
        .map(|s| (s, summaries(s, 1.0, 1024.0)))
        .collect();
    let all: Vec<&[(f64, Summary)]> = series.iter().map(|(_, p)| p.as_slice()).collect();
    let (lo, hi) = x_bounds(&all);
    if !lo.is_finite() {
        return Err("no idle-memory point".into());
    }
    let ticks: Vec<f64> = {
        let mut t: Vec<f64> = all.iter().flat_map(|s| s.iter().map(|(x, _)| *x)).collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    };
    let top = y_max(&all) * 1.2;
    let root = SVGBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
    let limit = "At most 19.5k connections here: the open-files hard limit (ulimit -Hn) is 20,000 per process on this machine and cannot be raised in it; each connection holds one.";
    let plot = canvas(&root, data, limit)?;
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "Idle memory per connection: RTM vs a hand-written tokio-tungstenite server",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (lo / 1.4..hi * 1.4).log_scale().with_key_points(ticks),
            0.0..top,
        )?;
    chart
        .configure_mesh()
        .x_desc("idle connections held open (log scale)")
        .y_desc("server RSS growth per connection (KiB)")
        .x_label_formatter(&|v| thousands(*v))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE)
        .draw()?;
    for (i, (s, points)) in series.iter().enumerate() {
        draw_medians(
            &mut chart,
            points,
            COLORS[i % COLORS.len()],
            &s.name,
            |v| format!("{v:.2} KiB"),
            (8, -18),
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// p50 and p99 cross-server latency against the offered rate, log-scale y;
/// the closed loop's capacity as a vertical line.
pub fn render_cluster_latency(data: &Dataset, out: &Path) -> Result<(), Error> {
    let lines: Vec<(&Series, Vec<(f64, Summary)>)> = data
        .series
        .iter()
        .filter(|s| s.key != "delivered")
        .map(|s| (s, summaries(s, 1000.0, 1.0)))
        .collect();
    let delivered = data
        .series("delivered")
        .map(|s| summaries(s, 1000.0, 1000.0))
        .unwrap_or_default();
    let capacity = delivered
        .iter()
        .find(|(x, _)| *x == 0.0)
        .map(|(_, s)| s.median);
    let all: Vec<&[(f64, Summary)]> = lines.iter().map(|(_, p)| p.as_slice()).collect();
    let (_, hi) = x_bounds(&all);
    if !hi.is_finite() {
        return Err("no latency point".into());
    }
    let x_top = hi.max(capacity.unwrap_or(0.0)) * 1.08;
    let y_lo = all
        .iter()
        .flat_map(|s| s.iter().map(|(_, s)| s.min))
        .fold(f64::INFINITY, f64::min)
        .max(0.01)
        / 1.6;
    let y_hi = y_max(&all) * 2.5;
    let overloaded: Vec<String> = delivered
        .iter()
        .filter(|(x, s)| *x > 0.0 && s.median < 0.95 * x)
        .map(|(x, s)| format!("{x:.0}k offered -> {:.0}k/s delivered", s.median))
        .collect();
    let extra = match (capacity, overloaded.is_empty()) {
        (Some(c), true) => format!("Closed loop (--rate 0) delivered {c:.0}k/s; every offered rate was delivered (95 % or more)."),
        (Some(c), false) => format!(
            "Closed loop (--rate 0) delivered {c:.0}k/s. Past saturation (medians): {}.",
            overloaded.join(", ")
        ),
        (None, _) => String::new(),
    };
    let root = SVGBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
    let plot = canvas(&root, data, &extra)?;
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "Cross-server delivery latency vs offered rate (rtm-cluster-bench, 100 users, one Redis)",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_top, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered publishes per second (thousands), one delivery each")
        .y_desc("publish -> delivery latency (ms, log scale)")
        .x_label_formatter(&|v| format!("{v:.0}k"))
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE)
        .draw()?;
    for (i, (s, points)) in lines.iter().enumerate() {
        let offset = if s.key == "p50" { (6, 8) } else { (6, -18) };
        draw_medians(
            &mut chart,
            points,
            COLORS[i % COLORS.len()],
            &s.name,
            |v| {
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            },
            offset,
        )?;
    }
    if let Some(c) = capacity {
        let style = COLORS[2].stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(c, y_lo), (c, y_hi)],
                8,
                6,
                style,
            ))?
            .label(format!("closed-loop capacity ({c:.0}k deliveries/s)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// Throughput against tokio worker threads, in one process; the machine's
/// core count as a vertical line.
pub fn render_inproc_scaling(data: &Dataset, out: &Path) -> Result<(), Error> {
    let series: Vec<(&Series, Vec<(f64, Summary)>)> = data
        .series
        .iter()
        .map(|s| (s, summaries(s, 1.0, 1e6)))
        .collect();
    let all: Vec<&[(f64, Summary)]> = series.iter().map(|(_, p)| p.as_slice()).collect();
    let (lo, hi) = x_bounds(&all);
    if !lo.is_finite() {
        return Err("no in-process point".into());
    }
    let top = y_max(&all) * 1.25;
    let ratios: Vec<String> = series
        .iter()
        .filter_map(|(s, p)| {
            let one = p.iter().find(|(x, _)| *x == 1.0)?.1.median;
            let two = p.iter().find(|(x, _)| *x == 2.0)?.1.median;
            Some(format!("{} {:.2}x", s.key, two / one))
        })
        .collect();
    let extra = format!(
        "2 threads / 1 thread (medians): {}. The machine has 2 cores: more threads than that only share them.",
        ratios.join(", ")
    );
    let root = SVGBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
    let plot = canvas(&root, data, &extra)?;
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "In-process throughput vs tokio worker threads (rtm-inproc, 2-core machine)",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(lo - 0.4..hi + 0.4, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("tokio worker threads")
        .y_desc("million per second")
        // Half steps: only the whole ones (thread counts) are written.
        .x_labels(((hi - lo) * 2.0) as usize + 3)
        .x_label_formatter(&|v| match (v - v.round()).abs() < 1e-6 {
            true => format!("{v:.0}"),
            false => String::new(),
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE)
        .draw()?;
    let cores = GREY.stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(2.0, 0.0), (2.0, top)],
            6,
            6,
            cores,
        ))?
        .label("2 cores on this machine")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], cores));
    for (i, (s, points)) in series.iter().enumerate() {
        draw_medians(
            &mut chart,
            points,
            COLORS[i % COLORS.len()],
            &s.name,
            |v| format!("{v:.2} M"),
            (8, -18),
        )?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        let p = |runs: &[f64]| Point {
            x: 1.0,
            runs: runs.to_vec(),
            command: String::new(),
        };
        let s = p(&[3.0, 1.0, 2.0]).summary().unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(p(&[4.0, 1.0, 2.0, 3.0]).summary().unwrap().median, 2.5);
        assert!(p(&[]).summary().is_none());
    }

    #[test]
    fn thousands_are_short() {
        assert_eq!(thousands(1000.0), "1k");
        assert_eq!(thousands(19500.0), "19.5k");
        assert_eq!(thousands(500.0), "500");
    }
}
