//! Container logs as CRI runtimes write them: one line per record,
//! `<RFC 3339 time> <stdout|stderr> <P|F> <text>`, where `P` marks a
//! partial line continued by the next record. Read back with the options
//! of `kubectl logs` (`--tail`, `--since`, `--timestamps`, `--limit-bytes`).

/// `kubectl logs` options the kubelet's `containerLogs` endpoint takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Keep following the file until the container exits.
    pub follow: bool,
    /// The previous instance's log.
    pub previous: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines newer than this (RFC 3339).
    pub since_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

impl Options {
    /// Parses the query string of a `containerLogs` (or `pods/log`) request.
    pub fn from_query(query: &str) -> Self {
        let mut o = Self::default();
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().to_string();
            match k {
                "follow" => o.follow = v == "true",
                "previous" => o.previous = v == "true",
                "tailLines" => o.tail_lines = v.parse().ok(),
                "timestamps" => o.timestamps = v == "true",
                "limitBytes" => o.limit_bytes = v.parse().ok(),
                "sinceSeconds" => o.since_time = v.parse::<i64>().ok().map(|s| chrono::Utc::now() - chrono::Duration::seconds(s)),
                "sinceTime" => o.since_time = chrono::DateTime::parse_from_rfc3339(&v).ok().map(|t| t.with_timezone(&chrono::Utc)),
                _ => {}
            }
        }
        o
    }
}

/// One log record (a whole line once partials are joined).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the runtime read it.
    pub time: String,
    /// The text, with its newline.
    pub text: String,
}

/// Parses CRI log text into whole lines, joining partial records. Returns
/// the records and how many bytes they cover: an unfinished partial
/// record at the end is left for the next read (follow mode).
pub fn parse(data: &str) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pending: Option<Record> = None;
    let (mut offset, mut complete) = (0, 0);
    for line in data.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break;
        }
        offset += line.len();
        let mut parts = line.trim_end_matches('\n').splitn(4, ' ');
        let (Some(time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let rec = pending.get_or_insert_with(|| Record { time: time.to_string(), text: String::new() });
        rec.text.push_str(parts.next().unwrap_or(""));
        if tag != "P" {
            rec.text.push('\n');
            out.extend(pending.take());
            complete = offset;
        }
    }
    (out, complete)
}

/// Renders records with the options (since, tail, timestamps, limit).
pub fn render(records: &[Record], o: &Options) -> String {
    let filtered: Vec<&Record> = records
        .iter()
        .filter(|r| match o.since_time {
            Some(since) => chrono::DateTime::parse_from_rfc3339(&r.time).map(|t| t >= since).unwrap_or(true),
            None => true,
        })
        .collect();
    let skip = o.tail_lines.map(|n| filtered.len().saturating_sub(n)).unwrap_or(0);
    let mut out = String::new();
    for r in &filtered[skip..] {
        if o.timestamps {
            out.push_str(&r.time);
            out.push(' ');
        }
        out.push_str(&r.text);
    }
    if let Some(limit) = o.limit_bytes {
        let mut cut = limit.min(out.len());
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Wakes a log follower when the runtime writes to its log file, through
/// inotify (the kubelet uses fsnotify the same way), so a followed line
/// reaches `kubectl logs -f` as soon as it is written and an idle follower
/// costs nothing. Without inotify (no watch could be added) it wakes on a
/// short timer instead.
pub struct FileChanges {
    events: Option<inotify::EventStream<Vec<u8>>>,
}

/// Why [`FileChanges::next`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The file was written to.
    Written,
    /// The writer closed the file: containerd does so when the container's
    /// output ends, that is, when it exits.
    Closed,
    /// Nothing happened within the wait.
    Quiet,
}

/// The wait between reads when the file cannot be watched.
const POLL_WITHOUT_INOTIFY: std::time::Duration = std::time::Duration::from_millis(200);

impl FileChanges {
    /// Watches `path` for writes and for its writer closing it.
    pub fn watch(path: &std::path::Path) -> Self {
        let events = (|| {
            let ino = inotify::Inotify::init()?;
            ino.watches().add(path, inotify::WatchMask::MODIFY | inotify::WatchMask::CLOSE_WRITE)?;
            ino.into_event_stream(vec![0u8; 1024])
        })();
        match events {
            Ok(events) => Self { events: Some(events) },
            Err(e) => {
                tracing::debug!(error = %e, path = %path.display(), "no inotify watch on the log file: following on a timer");
                Self { events: None }
            }
        }
    }

    /// Waits up to `quiet` for the next change.
    pub async fn next(&mut self, quiet: std::time::Duration) -> Wake {
        use futures::StreamExt;
        let Some(events) = self.events.as_mut() else {
            tokio::time::sleep(quiet.min(POLL_WITHOUT_INOTIFY)).await;
            return Wake::Quiet;
        };
        match tokio::time::timeout(quiet, events.next()).await {
            Ok(Some(Ok(ev))) if ev.mask.contains(inotify::EventMask::CLOSE_WRITE) => Wake::Closed,
            Ok(Some(Ok(_))) => Wake::Written,
            // The watch broke (the file went away, the queue overflowed):
            // fall back to the timer rather than spin.
            Ok(Some(Err(_)) | None) => {
                self.events = None;
                Wake::Quiet
            }
            Err(_) => Wake::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-25T10:00:00.000000001Z stdout F one\n2026-11-25T10:00:01.000000001Z stderr P tw\n2026-11-25T10:00:01.000000002Z stderr F o\n2026-11-25T10:00:02.000000001Z stdout F three\n";

    #[test]
    fn partial_records_join() {
        let (recs, used) = parse(LOG);
        assert_eq!(recs.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["one\n", "two\n", "three\n"]);
        assert_eq!(used, LOG.len());
        let cut = LOG.find("stderr F o").expect("partial");
        let (recs, used) = parse(&LOG[..cut - 31]);
        assert_eq!(recs.len(), 1, "the unfinished partial waits");
        assert_eq!(used, LOG.find("2026-11-25T10:00:01.000000001Z").expect("second"));
    }

    #[test]
    fn tail_timestamps_and_limits() {
        let (recs, _) = parse(LOG);
        assert_eq!(render(&recs, &Options { tail_lines: Some(1), ..Default::default() }), "three\n");
        assert_eq!(render(&recs, &Options { timestamps: true, tail_lines: Some(1), ..Default::default() }), "2026-11-25T10:00:02.000000001Z three\n");
        assert_eq!(render(&recs, &Options { limit_bytes: Some(5), ..Default::default() }), "one\nt");
        let since = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:01.5Z").expect("time").with_timezone(&chrono::Utc);
        assert_eq!(render(&recs, &Options { since_time: Some(since), ..Default::default() }), "three\n");
    }

    #[tokio::test]
    async fn file_changes_wake_on_writes_and_on_close() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut f = std::fs::File::create(&path).expect("create");
        let mut changes = FileChanges::watch(&path);
        assert_eq!(changes.next(std::time::Duration::from_millis(50)).await, Wake::Quiet);
        f.write_all(b"line\n").expect("write");
        assert_eq!(changes.next(std::time::Duration::from_secs(5)).await, Wake::Written);
        drop(f);
        assert_eq!(changes.next(std::time::Duration::from_secs(5)).await, Wake::Closed);
    }

    #[test]
    fn query_parsing() {
        let o = Options::from_query("follow=true&tailLines=10&timestamps=true&container=c");
        assert!(o.follow && o.timestamps);
        assert_eq!(o.tail_lines, Some(10));
    }
}
