//! `--hlog FILE`: the HdrHistogram interval log, the text format of HdrHistogram's
//! `HistogramLogWriter` that `HistogramLogProcessor`, HistogramLogAnalyzer and the
//! `hdrh`-based tools read.
//!
//! The file opens with comments, `#[StartTime: …]` and `#[BaseTime: …]` (the wall-clock
//! start of the measured span, in seconds since the epoch) and the legend line; then one
//! line per interval: `start,length,max,HISTF…`: the interval's start from BaseTime and
//! its length in seconds, its slowest latency, and its histogram, compressed (V2 +
//! DEFLATE, base64). Values are microseconds, as in the JSON report. The lines are written as each interval ends, so the file can be read while a
//! run goes on. With `--ramp-up`, an interval's exchanges of the rate ramp go on a line
//! of their own that opens with `Tag=ramp,` (see [`super::intervals::RAMP_TAG`]), so the
//! untagged lines are the report's main histogram.
//!
//! [`IntervalLog::parse`] reads such a file back, every untagged interval added up, for
//! `sockit bench merge` (which merges the reports' main histograms).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, LogIteratorError, Tag,
};

use super::histogram::LatencyHistogram;
use crate::error::{Error, Result};

/// The legend line of HdrHistogram's own writer, which readers skip.
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";

/// An open interval log.
pub struct HlogWriter {
    /// The file, written line by line.
    file: BufWriter<File>,
    /// Its name, for error messages.
    path: PathBuf,
    /// Compresses each histogram (reused, so its buffers are too).
    serializer: V2DeflateSerializer,
}

impl std::fmt::Debug for HlogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlogWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl HlogWriter {
    /// Creates (or empties) the log file, before the run starts, so that a path that
    /// cannot be written is refused before any connection.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the file and why it cannot be written.
    pub fn create(path: &Path) -> Result<HlogWriter> {
        let file = File::create(path)
            .map_err(|e| Error::Usage(format!("cannot write --hlog {}: {}", path.display(), e)))?;
        Ok(HlogWriter {
            file: BufWriter::new(file),
            path: path.to_path_buf(),
            serializer: V2DeflateSerializer::new(),
        })
    }

    /// Writes the header: what made the log, its start time and the legend.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn begin(&mut self, start: SystemTime, target: &str, every: Duration) -> Result<()> {
        let comment = format!(
            "sockit bench {target}: latency in microseconds, one histogram per {}",
            humantime::format_duration(every)
        );
        let header = IntervalLogWriterBuilder::new()
            .add_comment(&comment)
            .add_comment("[Histogram log format version 1.3]")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut self.file, &mut self.serializer)
            .map(drop);
        let written = header.and_then(|()| writeln!(self.file, "{LEGEND}"));
        written
            .and_then(|()| self.file.flush())
            .map_err(|e| self.failed(e))
    }

    /// Writes one interval: its histogram, which began `start` after the log's start
    /// and lasted `length`, on a line tagged `tag` if given.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written or the histogram encoded.
    pub fn write(
        &mut self,
        histogram: &LatencyHistogram,
        start: Duration,
        length: Duration,
        tag: Option<&str>,
    ) -> Result<()> {
        let mut log = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.serializer)
            .map_err(|e| Error::Io {
                doing: format!("writing the interval log {}", self.path.display()),
                source: e,
            })?;
        let tag = tag.and_then(Tag::new);
        let written = log.write_histogram(&histogram.inner(), start, length, tag);
        drop(log);
        written.map_err(|e| Error::Io {
            doing: format!("writing the interval log {}", self.path.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.flush()
    }

    /// Pushes what is buffered to the file.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| self.failed(e))
    }

    /// A write failure as an error naming the file.
    fn failed(&self, source: std::io::Error) -> Error {
        Error::Io {
            doing: format!("writing the interval log {}", self.path.display()),
            source,
        }
    }
}

/// Why an interval log could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LogError(String);

/// An interval log read back: all its intervals added into one histogram.
#[derive(Debug, Clone, Default)]
pub struct IntervalLog {
    /// How many untagged interval lines the log holds.
    pub intervals: u64,
    /// The sum of their histograms (a report's main histogram; tagged lines, such as the
    /// rate ramp's, are left out).
    pub latency: LatencyHistogram,
}

impl IntervalLog {
    /// Whether a file's text is meant as an interval log rather than a JSON report:
    /// anything that does not open with `{`.
    pub fn is_meant(text: &[u8]) -> bool {
        text.trim_ascii_start().first() != Some(&b'{')
    }

    /// Reads an interval log and adds up its intervals' histograms.
    ///
    /// # Errors
    /// [`LogError`] naming the first line that is not part of an interval
    /// log, the interval whose histogram does not decode, or a text with neither a
    /// header nor an interval.
    pub fn parse(text: &[u8]) -> std::result::Result<IntervalLog, LogError> {
        let mut log = IntervalLog::default();
        let mut entries = 0_u64;
        for entry in IntervalLogIterator::new(text) {
            entries += 1;
            let interval = match entry {
                Ok(LogEntry::Interval(interval)) if interval.tag().is_none() => interval,
                Ok(LogEntry::Interval(_)) => continue,
                Ok(LogEntry::StartTime(_) | LogEntry::BaseTime(_)) => continue,
                Err(LogIteratorError::ParseError { offset }) => {
                    return Err(LogError(format!(
                        "not a JSON report, and line {} is not part of an interval log (--hlog)",
                        line_at(text, offset)
                    )));
                }
            };
            log.intervals += 1;
            let histogram =
                LatencyHistogram::decode(interval.encoded_histogram()).map_err(|e| {
                    LogError(format!(
                        "interval {} of the interval log: {e}",
                        log.intervals
                    ))
                })?;
            log.latency.add(&histogram);
        }
        if entries == 0 {
            return Err(LogError(
                "neither a JSON report nor an interval log (no header, no interval)".into(),
            ));
        }
        Ok(log)
    }
}

/// The 1-based line number of a byte offset.
fn line_at(text: &[u8], offset: usize) -> usize {
    let before = &text[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_has_the_header_and_one_line_per_interval() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("run.hlog");
        let mut log = HlogWriter::create(&path).unwrap_or_else(|e| panic!("{e}"));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let second = Duration::from_secs(1);
        log.begin(start, "tcp://127.0.0.1:9", second)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut histogram = LatencyHistogram::new();
        histogram.record(Duration::from_micros(1500));
        log.write(&histogram, Duration::ZERO, second, None)
            .unwrap_or_else(|e| panic!("{e}"));
        log.write(&LatencyHistogram::new(), second, second / 2, None)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            text.contains("#[StartTime: 1700000000.000 (seconds since epoch)]"),
            "{text}"
        );
        assert!(text.contains("#[BaseTime: 1700000000.000"), "{text}");
        assert!(text.contains(LEGEND), "{text}");
        let lines: Vec<_> = text
            .lines()
            .filter(|l| !l.starts_with(['#', '"']))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("0.000,1.000,1500.000,HISTF"), "{text}");
        assert!(lines[1].starts_with("1.000,0.500,0.000,HISTF"), "{text}");
    }

    #[test]
    fn an_unwritable_path_is_a_usage_error() {
        let error = HlogWriter::create(Path::new("/nonexistent-dir/run.hlog")).err();
        assert!(
            matches!(&error, Some(Error::Usage(m)) if m.starts_with("cannot write --hlog")),
            "{error:?}"
        );
    }

    /// A log of two intervals, 1500 µs and 20 µs × 2, as the writer makes it, and a
    /// line tagged `ramp` beside the first.
    fn two_interval_log() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("run.hlog");
        let mut log = HlogWriter::create(&path).unwrap_or_else(|e| panic!("{e}"));
        let second = Duration::from_secs(1);
        log.begin(SystemTime::UNIX_EPOCH, "tcp://127.0.0.1:9", second)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut first = LatencyHistogram::new();
        first.record(Duration::from_micros(1500));
        let mut second_one = LatencyHistogram::new();
        second_one.record(Duration::from_micros(20));
        second_one.record(Duration::from_micros(20));
        log.write(&first, Duration::ZERO, second, None)
            .unwrap_or_else(|e| panic!("{e}"));
        log.write(&first, Duration::ZERO, second, Some("ramp"))
            .unwrap_or_else(|e| panic!("{e}"));
        log.write(&second_one, second, second, None)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(log);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_log_reads_back_as_the_sum_of_its_intervals() {
        let text = two_interval_log();
        assert!(IntervalLog::is_meant(&text));
        let log = IntervalLog::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(String::from_utf8_lossy(&text).contains("\nTag=ramp,0.000,1.000,"));
        assert_eq!(log.intervals, 2, "the tagged line is not counted");
        assert_eq!(log.latency.count(), 3);
        assert_eq!(log.latency.percentiles().max, Duration::from_micros(1500));
    }

    #[test]
    fn a_corrupt_log_names_the_line_or_the_interval() {
        let mut text = two_interval_log();
        text.extend_from_slice(b"garbage\n");
        let lines = text.iter().filter(|&&b| b == b'\n').count();
        let error = IntervalLog::parse(&text).err().map(|e| e.to_string());
        assert_eq!(
            error,
            Some(format!(
                "not a JSON report, and line {lines} is not part of an interval log (--hlog)"
            ))
        );
        let broken = b"0.000,1.000,1.000,HISTFAAAAbad\n";
        let error = IntervalLog::parse(broken).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.starts_with("interval 1 of the interval log: ")),
            "{error:?}"
        );
        assert!(IntervalLog::parse(b"").is_err());
        assert!(!IntervalLog::is_meant(b"  {\"format\": 1}"));
    }
}
