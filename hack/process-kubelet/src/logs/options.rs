//! (pure) The query of `GET /containerLogs/...`, read and checked as the kubelet reads its
//! `PodLogOptions`.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;

use super::LogError;

/// The kubelet's `PodLogOptions` (query parameters of `/containerLogs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since: Option<Timestamp>,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, LogError> {
    // Go's strconv.ParseBool, as the API machinery's parameter codec uses.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(LogError::BadRequest(format!("{key}={v:?}: not a boolean"))),
    }
}

fn parse_int(key: &str, v: &str) -> Result<i64, LogError> {
    v.parse()
        .map_err(|_| LogError::BadRequest(format!("{key}={v:?}: not an integer")))
}

impl LogOptions {
    /// Parses and validates the query as the kubelet does (`tail` is the old name of
    /// `tailLines`, `tail=all` means no limit). `stream` other than `All` is refused: stdout and
    /// stderr share one file here (as without the `PodLogsQuerySplitStreams` feature gate).
    pub fn from_query(q: &HashMap<String, String>, now: Timestamp) -> Result<Self, LogError> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let mut o = LogOptions {
            follow: get("follow").map_or(Ok(false), |v| parse_bool("follow", v))?,
            previous: get("previous").map_or(Ok(false), |v| parse_bool("previous", v))?,
            timestamps: get("timestamps").map_or(Ok(false), |v| parse_bool("timestamps", v))?,
            ..LogOptions::default()
        };
        let tail = match get("tail") {
            Some("all") => None,
            Some(t) if !t.is_empty() => Some(t),
            _ => get("tailLines"),
        };
        if let Some(t) = tail {
            let n = parse_int("tailLines", t)?;
            o.tail_lines = Some(
                u64::try_from(n).map_err(|_| LogError::Invalid("tailLines must be >= 0".into()))?,
            );
        }
        if let Some(v) = get("limitBytes") {
            let n = parse_int("limitBytes", v)?;
            if n < 1 {
                return Err(LogError::Invalid("limitBytes must be >= 1".into()));
            }
            o.limit_bytes = u64::try_from(n).ok();
        }
        match (get("sinceSeconds"), get("sinceTime")) {
            (Some(_), Some(_)) => {
                return Err(LogError::Invalid(
                    "at most one of sinceTime and sinceSeconds may be set".into(),
                ))
            }
            (Some(s), None) => {
                let n = parse_int("sinceSeconds", s)?;
                if n < 1 {
                    return Err(LogError::Invalid("sinceSeconds must be >= 1".into()));
                }
                let span = k8s_openapi::jiff::SignedDuration::from_secs(n);
                o.since = Some(now.checked_sub(span).unwrap_or(Timestamp::MIN));
            }
            (None, Some(t)) => {
                o.since = Some(t.parse().map_err(|e| {
                    LogError::BadRequest(format!("sinceTime={t:?}: not an RFC 3339 time: {e}"))
                })?);
            }
            (None, None) => {}
        }
        match get("stream") {
            None | Some("" | "All") => {}
            Some(s @ ("Stdout" | "Stderr")) => {
                return Err(LogError::BadRequest(format!(
                    "unable to return the given log stream: {s:?}: rc-process-kubelet writes stdout and stderr to one file"
                )))
            }
            Some(s) => {
                return Err(LogError::BadRequest(format!("invalid stream type {s:?}")));
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn query_parameters_as_the_kubelet_reads_them() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let now = ts(1000);
        let o = LogOptions::from_query(
            &q(&[
                ("follow", "true"),
                ("tailLines", "5"),
                ("limitBytes", "10"),
                ("sinceSeconds", "60"),
            ]),
            now,
        )
        .unwrap();
        assert!(o.follow && !o.previous);
        assert_eq!(
            (o.tail_lines, o.limit_bytes, o.since),
            (Some(5), Some(10), Some(ts(940)))
        );
        assert_eq!(
            LogOptions::from_query(&q(&[("tail", "all"), ("tailLines", "3")]), now)
                .unwrap()
                .tail_lines,
            None
        );
        assert_eq!(
            LogOptions::from_query(&q(&[("sinceTime", "1970-01-01T00:10:00Z")]), now)
                .unwrap()
                .since,
            Some(ts(600))
        );
        assert!(matches!(
            LogOptions::from_query(
                &q(&[("sinceTime", "1970-01-01T00:10:00Z"), ("sinceSeconds", "1")]),
                now
            ),
            Err(LogError::Invalid(_))
        ));
        assert!(matches!(
            LogOptions::from_query(&q(&[("tailLines", "-1")]), now),
            Err(LogError::Invalid(_))
        ));
        assert!(matches!(
            LogOptions::from_query(&q(&[("follow", "yes")]), now),
            Err(LogError::BadRequest(_))
        ));
        assert!(matches!(
            LogOptions::from_query(&q(&[("stream", "Stderr")]), now),
            Err(LogError::BadRequest(_))
        ));
        assert!(LogOptions::from_query(&q(&[("stream", "All")]), now).is_ok());
    }
}
