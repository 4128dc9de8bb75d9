//! `cluster up` / `rehearse --question --options --closes`: the poll the
//! local cluster runs. The flags become the tiers' `QUESTION`, `OPTIONS`
//! and `POLL_CLOSES`; every other poll setting (`POLL_OPENS`,
//! `RESULTS_VISIBLE`, ...) reaches them from the environment, as all
//! settings do. The whole poll is checked here first, so a bad one is one
//! line from `cluster` rather than three tiers failing to start.

use chrono::{DateTime, Utc};
use clap::Parser;

use super::ClusterError;
use crate::poll::{Poll, PollArgs};

/// Variables for every tier's environment, name and value.
pub type TierEnv = Vec<(&'static str, String)>;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PollFlags {
    /// The poll's question (QUESTION of capture and results).
    #[arg(long)]
    pub question: Option<String>,
    /// The poll's options: 2 to 12 comma-separated labels, voted as `a`,
    /// `b`, ... (OPTIONS of capture, workers and results).
    #[arg(long)]
    pub options: Option<String>,
    /// When voting closes: an RFC 3339 time, or `+SECONDS` from the
    /// cluster's start (a rehearsal across the close) (POLL_CLOSES).
    #[arg(long)]
    pub closes: Option<String>,
}

/// The poll settings the environment gives, as every tier would read them.
#[derive(Parser)]
struct FromEnv {
    #[command(flatten)]
    poll: PollArgs,
}

impl PollFlags {
    /// The poll, checked, and the variables that carry the flags to the
    /// tiers; `now` is what `+SECONDS` counts from.
    pub fn resolve(&self, now: DateTime<Utc>) -> Result<(Poll, TierEnv), ClusterError> {
        let mut args = FromEnv::try_parse_from(["cluster"])
            .map_err(|e| {
                let text = e.to_string();
                let line = text.lines().next().unwrap_or_default();
                ClusterError::new(format!(
                    "the poll's settings: {}",
                    line.trim_start_matches("error: ")
                ))
            })?
            .poll;
        let mut env = Vec::new();
        if let Some(q) = &self.question {
            args.question = q.clone();
            env.push(("QUESTION", q.clone()));
        }
        if let Some(o) = &self.options {
            args.options = Some(o.clone());
            env.push(("OPTIONS", o.clone()));
        }
        if let Some(c) = &self.closes {
            let at = match c.strip_prefix('+') {
                Some(secs) => {
                    let secs: i64 = secs.trim_end_matches('s').parse().map_err(|_| {
                        ClusterError::new(format!(
                            "--closes: an RFC 3339 time or +SECONDS, not {c:?}"
                        ))
                    })?;
                    Poll::format_time(now + chrono::Duration::seconds(secs))
                }
                None => c.clone(),
            };
            args.poll_closes = Some(at.clone());
            env.push(("POLL_CLOSES", at));
        }
        let poll = args
            .into_poll()
            .map_err(|e| ClusterError::new(e.to_string()))?;
        Ok((poll, env))
    }
}

/// One line for `cluster up`'s table: the question, the options by letter,
/// the window.
pub fn describe(poll: &Poll) -> String {
    let options: Vec<String> = poll
        .letters()
        .map(|(l, label)| format!("{l} {label}"))
        .collect();
    let window = match (poll.opens, poll.closes) {
        (None, None) => "open, never closes".to_owned(),
        (Some(o), None) => format!("opens {}, never closes", Poll::format_time(o)),
        (None, Some(c)) => format!("closes {}", Poll::format_time(c)),
        (Some(o), Some(c)) => format!(
            "opens {}, closes {}",
            Poll::format_time(o),
            Poll::format_time(c)
        ),
    };
    format!("{:?}: {}; {window}", poll.question, options.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_become_the_tiers_variables_and_plus_seconds_counts_from_now() {
        let now = DateTime::parse_from_rfc3339("2027-02-07T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let flags = PollFlags {
            question: Some("Best colour?".into()),
            options: Some("Red,Green,Blue".into()),
            closes: Some("+90".into()),
        };
        let (poll, env) = flags.resolve(now).unwrap();
        assert_eq!(poll.options, ["Red", "Green", "Blue"]);
        assert_eq!(
            env,
            [
                ("QUESTION", "Best colour?".to_owned()),
                ("OPTIONS", "Red,Green,Blue".to_owned()),
                ("POLL_CLOSES", "2027-02-07T23:31:30Z".to_owned()),
            ]
        );
        assert_eq!(
            describe(&poll),
            r#""Best colour?": a Red, b Green, c Blue; closes 2027-02-07T23:31:30Z"#
        );

        let (poll, env) = PollFlags::default().resolve(now).unwrap();
        assert!(env.is_empty(), "no flag: the environment as it is");
        assert_eq!(poll.options.len(), 2);
    }

    #[test]
    fn a_bad_poll_is_one_line_naming_what_is_wrong() {
        let now = Utc::now();
        let bad = |f: PollFlags| f.resolve(now).unwrap_err().to_string();
        let e = bad(PollFlags {
            closes: Some("+soon".into()),
            ..PollFlags::default()
        });
        assert!(e.starts_with("--closes:"), "{e}");
        let e = bad(PollFlags {
            options: Some("Only".into()),
            ..PollFlags::default()
        });
        assert!(e.starts_with("OPTIONS: 2 to 12"), "{e}");
        let e = bad(PollFlags {
            closes: Some("tomorrow".into()),
            ..PollFlags::default()
        });
        assert!(e.starts_with("POLL_CLOSES is not an RFC 3339 time"), "{e}");
        assert!(!e.contains('\n'));
    }
}
