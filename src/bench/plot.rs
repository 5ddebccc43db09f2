//! `--plot FILE.svg`: the run as a picture, drawn with `plotters` into SVG (no browser,
//! no font files: the SVG names its fonts and the viewer renders the text).
//!
//! Two panels:
//! * the latency percentile spectrum, HdrHistogram's "percentile distribution" plot: the
//!   x axis is `log10(1 / (1 - q))`, so 90 %, 99 %, 99.9 % … are evenly spaced and the
//!   tail gets the room it deserves;
//! * throughput and p99 per interval over the measured span (throughput on the left axis,
//!   p99 on the right), where stalls and warm-up effects show.
//!
//! Each series is a `<polyline>` with its name in the legend as `<text>`, so a test (or a
//! script) can find them by name: [`SERIES_SPECTRUM`], [`SERIES_THROUGHPUT`],
//! [`SERIES_P99`].

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::prelude::*;

use super::histogram::LatencyHistogram;
use super::intervals::IntervalSummary;
use crate::error::{Error, Result};

/// The legend name of the percentile spectrum.
pub const SERIES_SPECTRUM: &str = "latency by percentile";

/// The legend name of the throughput per interval.
pub const SERIES_THROUGHPUT: &str = "throughput (exchanges/s)";

/// The legend name of p99 per interval.
pub const SERIES_P99: &str = "p99 latency per interval (ms)";

/// The legend name of the sum of merged runs (`bench merge --plot`).
pub const SERIES_MERGED: &str = "all runs merged";

/// The picture's size in pixels.
const SIZE: (u32, u32) = (1000, 900);

/// Points along the spectrum's x axis.
const SPECTRUM_POINTS: u32 = 400;

/// Room right of the spectrum's plotting area, so the last percentile label, centred on
/// the axis's end ("99.9999%"), is drawn whole.
const SPECTRUM_RIGHT_MARGIN: u32 = 40;

/// The colour of the first spectrum (the run's, or the sum of merged runs).
const FIRST_SERIES_COLOR: RGBColor = BLUE;

/// The colours of further spectra (the merged runs, in turn): each stands out from the
/// others and reads on the white background (contrast of 3:1 or more, none of the light
/// yellows or greens of the usual palettes).
const RUN_COLORS: [RGBColor; 8] = [
    RGBColor(0xE4, 0x1A, 0x1C),
    RGBColor(0x1A, 0x7F, 0x37),
    RGBColor(0x98, 0x4E, 0xA3),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0xA6, 0x56, 0x28),
    RGBColor(0xE7, 0x29, 0x8A),
    RGBColor(0x66, 0x66, 0x66),
    RGBColor(0x00, 0x00, 0x00),
];

/// The colour of the throughput per interval: a dark green that reads on white.
const THROUGHPUT_COLOR: RGBColor = RGBColor(0x1A, 0x7F, 0x37);

/// The deepest percentile shown: 99.9999 %.
const MAX_NINES: f64 = 6.0;

/// A plot file, created before the run so a bad path is refused before any connection.
#[derive(Debug)]
pub struct PlotFile {
    /// The file, written at the end of the run.
    file: File,
    /// Its name, for error messages.
    path: PathBuf,
}

impl PlotFile {
    /// Creates (or empties) the file.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the file and why it cannot be written.
    pub fn create(path: &Path) -> Result<PlotFile> {
        let file = File::create(path)
            .map_err(|e| Error::Usage(format!("cannot write --plot {}: {e}", path.display())))?;
        Ok(PlotFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Draws the run and writes the SVG.
    ///
    /// # Errors
    /// [`Error::Io`] if the picture cannot be drawn or written.
    pub fn write(
        self,
        title: &str,
        latency: &LatencyHistogram,
        intervals: &[IntervalSummary],
    ) -> Result<()> {
        let svg = draw(title, latency, intervals);
        self.save(svg)
    }

    /// Draws the percentile spectrum of each run and of their sum (`bench merge
    /// --plot`), one line each, named as given, and writes the SVG.
    ///
    /// # Errors
    /// [`Error::Io`] if the picture cannot be drawn or written.
    pub fn write_comparison(
        self,
        title: &str,
        runs: &[(String, LatencyHistogram)],
        merged: &LatencyHistogram,
    ) -> Result<()> {
        let svg = draw_comparison(title, runs, merged);
        self.save(svg)
    }

    /// Writes drawn SVG text to the file.
    fn save(mut self, svg: std::result::Result<String, String>) -> Result<()> {
        let svg = svg.map_err(|what| Error::Io {
            doing: format!("drawing the plot {}", self.path.display()),
            source: std::io::Error::other(what),
        })?;
        self.file
            .write_all(svg.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| Error::Io {
                doing: format!("writing the plot {}", self.path.display()),
                source,
            })
    }
}

/// The percentile spectra of several runs and of their sum, one line each, as SVG text
/// (`bench merge --plot`).
fn draw_comparison(
    title: &str,
    runs: &[(String, LatencyHistogram)],
    merged: &LatencyHistogram,
) -> std::result::Result<String, String> {
    let mut svg = String::new();
    {
        let size = (SIZE.0, SIZE.1 / 2 + 40);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let mut series: Vec<(&str, &LatencyHistogram)> = vec![(SERIES_MERGED, merged)];
        series.extend(runs.iter().map(|(name, latency)| (name.as_str(), latency)));
        draw_spectrum(&root, &series).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// The whole picture as SVG text.
fn draw(
    title: &str,
    latency: &LatencyHistogram,
    intervals: &[IntervalSummary],
) -> std::result::Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let (upper, lower) = root.split_vertically(SIZE.1 / 2 - 20);
        draw_spectrum(&upper, &[(SERIES_SPECTRUM, latency)]).map_err(|e| e.to_string())?;
        draw_over_time(&lower, intervals).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A drawing failure, in words.
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Milliseconds of a duration, for the axes.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The percentile spectrum of each named histogram: latency (ms) against
/// `log10(1 / (1 - q))`, one line each.
fn draw_spectrum(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[(&str, &LatencyHistogram)],
) -> DrawResult {
    let lines: Vec<_> = series
        .iter()
        .map(|(name, latency)| (*name, spectrum(latency)))
        .collect();
    let all_points = || lines.iter().flat_map(|(_, points)| points.iter());
    let x_max = all_points().map(|(x, _)| *x).fold(1.0, f64::max);
    let y_max = all_points().map(|(_, y)| *y).fold(0.0, f64::max).max(0.001) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile", ("sans-serif", 18))
        .margin(15)
        .margin_right(SPECTRUM_RIGHT_MARGIN)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_labels(x_max.ceil() as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    for (index, (name, points)) in lines.into_iter().enumerate() {
        let color = match index.checked_sub(1) {
            None => FIRST_SERIES_COLOR,
            Some(run) => RUN_COLORS[run % RUN_COLORS.len()],
        };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Points `(log10(1 / (1 - q)), latency in ms)` from the median-free start (q = 0) to the
/// deepest percentile the sample count can show.
fn spectrum(latency: &LatencyHistogram) -> Vec<(f64, f64)> {
    if latency.count() == 0 {
        return Vec::new();
    }
    let nines = (latency.count() as f64)
        .log10()
        .ceil()
        .clamp(1.0, MAX_NINES);
    (0..=SPECTRUM_POINTS)
        .map(|i| {
            let x = nines * f64::from(i) / f64::from(SPECTRUM_POINTS);
            let quantile = 1.0 - 10f64.powf(-x);
            (x, ms(latency.value_at_quantile(quantile)))
        })
        .collect()
}

/// "0%", "90%", "99%", "99.9%" … for a spectrum x position.
fn percentile_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{percent:.decimals$}%")
}

/// Throughput (left axis) and p99 (right axis) per interval, as steps across each
/// interval.
fn draw_over_time(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    intervals: &[IntervalSummary],
) -> DrawResult {
    let at = |i: &IntervalSummary| (i.start + i.length).as_secs_f64();
    let x_max = intervals.iter().map(at).fold(0.0, f64::max).max(0.001);
    let rate_max = intervals
        .iter()
        .map(IntervalSummary::rate)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let p99_max = intervals
        .iter()
        .map(|i| ms(i.p99))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput and p99 per interval", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..rate_max)?
        .set_secondary_coord(0.0..x_max, 0.0..p99_max);
    chart
        .configure_mesh()
        .x_desc("seconds into the measured span")
        .y_desc("exchanges/s")
        .draw()?;
    chart.configure_secondary_axes().y_desc("p99 (ms)").draw()?;
    let rates = steps(intervals.iter(), IntervalSummary::rate);
    chart
        .draw_series(LineSeries::new(rates, THROUGHPUT_COLOR.stroke_width(2)))?
        .label(SERIES_THROUGHPUT)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], THROUGHPUT_COLOR.stroke_width(2)));
    let p99s = steps(intervals.iter().filter(|i| i.count > 0), |i| ms(i.p99));
    chart
        .draw_secondary_series(LineSeries::new(p99s, RED.stroke_width(2)))?
        .label(SERIES_P99)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Two points per interval, at its start and its end, at the height `value` gives it.
fn steps<'a>(
    intervals: impl Iterator<Item = &'a IntervalSummary>,
    value: impl Fn(&IntervalSummary) -> f64,
) -> Vec<(f64, f64)> {
    intervals
        .flat_map(|i| {
            let height = value(i);
            [
                (i.start.as_secs_f64(), height),
                ((i.start + i.length).as_secs_f64(), height),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_as_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }

    #[test]
    fn the_svg_names_every_series() {
        let mut latency = LatencyHistogram::new();
        for us in 1..=1000u64 {
            latency.record(Duration::from_micros(us));
        }
        let second = Duration::from_secs(1);
        let intervals = [
            IntervalSummary {
                start: Duration::ZERO,
                length: second,
                count: 600,
                p50: Duration::from_micros(300),
                p99: Duration::from_micros(600),
                max: Duration::from_micros(601),
            },
            IntervalSummary {
                start: second,
                length: second,
                count: 400,
                p50: Duration::from_micros(800),
                p99: Duration::from_micros(990),
                max: Duration::from_micros(1000),
            },
        ];
        let svg = draw("test", &latency, &intervals).unwrap_or_else(|e| panic!("{e}"));
        for name in [SERIES_SPECTRUM, SERIES_THROUGHPUT, SERIES_P99] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.matches("<polyline").count() >= 3, "{svg}");
        let empty = draw("empty", &LatencyHistogram::new(), &[]);
        assert!(empty.is_ok(), "{empty:?}");
    }

    #[test]
    fn a_comparison_has_one_line_per_run_and_the_sum() {
        let run = |us: u64| {
            let mut latency = LatencyHistogram::new();
            for _ in 0..100 {
                latency.record(Duration::from_micros(us));
            }
            latency
        };
        let runs = [
            ("a.json".to_string(), run(100)),
            ("b.json".to_string(), run(300)),
        ];
        let mut merged = run(100);
        merged.add(&runs[1].1);
        let svg = draw_comparison("cmp", &runs, &merged).unwrap_or_else(|e| panic!("{e}"));
        for name in [SERIES_MERGED, "a.json", "b.json"] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.matches("<polyline").count() >= 3, "{svg}");
    }
}
