//! The poll itself: its question, its 2 to 12 options, its voting window and
//! whether the public may see the count before the close.
//!
//! Capture, the worker and results all flatten the same [`PollArgs`], so the
//! deploy files set one group of variables and every role describes, checks
//! and counts the same poll. Options travel as letters (`a` is the first
//! label, `b` the second, ... `l` the twelfth): a poll's labels are
//! configuration, never stored, so `a`/`b` of a two-option poll mean what
//! they always meant.

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, ValueEnum};

use crate::config::ConfigError;
use crate::vote::VoteOption;

pub const MIN_OPTIONS: usize = 2;
/// Televoting and VoltDB's Voter benchmark take up to 12 contestants; the
/// letters `a` to `l` cover them.
pub const MAX_OPTIONS: usize = 12;
/// In characters: a label has to fit on a phone-wide button.
pub const MAX_LABEL_CHARS: usize = 60;
pub const MAX_QUESTION_CHARS: usize = 200;

pub const DEFAULT_QUESTION: &str = "Cats or Dogs?";
pub const DEFAULT_OPTIONS: [&str; 2] = ["Cats", "Dogs"];

/// Who sees the count before the poll closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum ResultsVisible {
    /// Everyone, all the time.
    #[default]
    Always,
    /// The public only after the close (the operator's token sees it
    /// always).
    #[value(name = "after_close")]
    AfterClose,
}

/// The poll's settings as flags and environment variables.
#[derive(Args, Debug, Clone, Default)]
pub struct PollArgs {
    /// The question the vote page asks.
    #[arg(long, env = "QUESTION", default_value = DEFAULT_QUESTION)]
    pub question: String,
    /// 2 to 12 comma-separated labels; the form and API values are `a`,
    /// `b`, ... in this order [default: Cats,Dogs].
    #[arg(long, env = "OPTIONS")]
    pub options: Option<String>,
    /// Label of option `a` (older form of OPTIONS' first label).
    #[arg(long, env = "OPTION_A")]
    pub option_a: Option<String>,
    /// Label of option `b` (older form of OPTIONS' second label).
    #[arg(long, env = "OPTION_B")]
    pub option_b: Option<String>,
    /// When voting opens (RFC 3339, e.g. 2027-02-07T23:30:00Z); votes before
    /// it get 403 poll_not_open [default: open from the start].
    #[arg(long, env = "POLL_OPENS")]
    pub poll_opens: Option<String>,
    /// When voting closes (RFC 3339); a vote stamped at or after it gets
    /// 403 poll_closed, and workers count none [default: never].
    #[arg(long, env = "POLL_CLOSES")]
    pub poll_closes: Option<String>,
    /// `always`, or `after_close`: the public page and API hide the count
    /// until the poll closes.
    #[arg(long, env = "RESULTS_VISIBLE", value_enum, default_value_t)]
    pub results_visible: ResultsVisible,
}

/// Where a moment falls in the poll's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    NotOpen,
    Open,
    Closed,
}

impl Phase {
    /// The reason a refused vote carries (`docs/PROTOCOL.md`).
    pub fn refusal_reason(self) -> Option<&'static str> {
        match self {
            Phase::NotOpen => Some("poll_not_open"),
            Phase::Open => None,
            Phase::Closed => Some("poll_closed"),
        }
    }
}

/// The resolved poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    pub question: String,
    /// The labels, in letter order: `options[0]` is `a`.
    pub options: Vec<String>,
    pub opens: Option<DateTime<Utc>>,
    pub closes: Option<DateTime<Utc>>,
    pub results_visible: ResultsVisible,
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            question: DEFAULT_QUESTION.to_owned(),
            options: DEFAULT_OPTIONS.iter().map(|s| (*s).to_owned()).collect(),
            opens: None,
            closes: None,
            results_visible: ResultsVisible::Always,
        }
    }
}

/// `a` for 0, `b` for 1, ...; `i` below [`MAX_OPTIONS`].
pub fn letter(i: usize) -> char {
    assert!(i < MAX_OPTIONS, "option {i} past the twelfth");
    char::from(b'a' + i as u8)
}

/// The index of an option letter `a`..`l`, whatever the poll's size.
pub fn letter_index(value: &str) -> Option<usize> {
    match value.as_bytes() {
        [b @ b'a'..=b'l'] => Some(usize::from(b - b'a')),
        _ => None,
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl Poll {
    /// A poll of these labels, otherwise the defaults (tests).
    pub fn with_options(labels: &[&str]) -> Poll {
        Poll {
            options: labels.iter().map(|s| (*s).to_owned()).collect(),
            ..Poll::default()
        }
    }

    /// The index of `value` if it is one of this poll's letters.
    pub fn option_index(&self, value: &str) -> Option<usize> {
        letter_index(value).filter(|&i| i < self.options.len())
    }

    /// The option `value` names if it is one of this poll's letters.
    pub fn vote_option(&self, value: &str) -> Option<VoteOption> {
        self.option_index(value).and_then(VoteOption::from_index)
    }

    /// This poll's options, in order.
    pub fn vote_options(&self) -> &'static [VoteOption] {
        &VoteOption::ALL[..self.options.len().min(MAX_OPTIONS)]
    }

    /// Whether `o` is one of this poll's options.
    pub fn has(&self, o: VoteOption) -> bool {
        o.index() < self.options.len()
    }

    /// The label of `o`, if the poll has it.
    pub fn label(&self, o: VoteOption) -> Option<&str> {
        self.options.get(o.index()).map(String::as_str)
    }

    /// Why a worker must not count this well-formed vote, if it must not:
    /// an option the poll does not have (written by a capture node with
    /// other settings, or by hand), or a stamp at or after the close. The
    /// reason starts with the word capture's refusal uses (`bad_option`,
    /// `poll_closed`), for whoever reads the dead letters.
    pub fn refuses_count(&self, option: VoteOption, ts_micros: i64) -> Option<String> {
        if !self.has(option) {
            return Some(format!(
                "bad_option: option `{option}` is not one of this poll's {} options ({})",
                self.options.len(),
                choices(self.options.len())
            ));
        }
        if !self.counts_stamp(ts_micros) {
            let closes = self.closes.map(Poll::format_time).unwrap_or_default();
            return Some(format!(
                "poll_closed: stamped {ts_micros} (microseconds), at or after the close {closes}"
            ));
        }
        None
    }

    /// `(letter, label)` in order.
    pub fn letters(&self) -> impl Iterator<Item = (char, &str)> {
        self.options
            .iter()
            .enumerate()
            .map(|(i, l)| (letter(i), l.as_str()))
    }

    /// Where `ts` (microseconds since the epoch, as a vote's stamp) falls:
    /// open from `opens` inclusive to `closes` exclusive, so a vote stamped
    /// at the close itself is late.
    pub fn phase_at(&self, ts_micros: i64) -> Phase {
        if self.opens.is_some_and(|o| ts_micros < micros(o)) {
            Phase::NotOpen
        } else if self.closes.is_some_and(|c| ts_micros >= micros(c)) {
            Phase::Closed
        } else {
            Phase::Open
        }
    }

    pub fn phase_now(&self) -> Phase {
        self.phase_at(micros(Utc::now()))
    }

    /// Whether a worker may count a vote stamped `ts`: not after the close.
    /// (Before the opening cannot happen for a vote a capture node took;
    /// the worker leaves that judgement to capture, whose clock stamped it.)
    pub fn counts_stamp(&self, ts_micros: i64) -> bool {
        self.phase_at(ts_micros) != Phase::Closed
    }

    /// Whether the public may see the count now.
    pub fn counts_public_now(&self) -> bool {
        match self.results_visible {
            ResultsVisible::Always => true,
            ResultsVisible::AfterClose => self.phase_now() == Phase::Closed,
        }
    }

    /// Whether the poll can still take votes at some point from now on: a
    /// count is final only when this is false (or the poll never closes and
    /// nothing is queued: see the results node).
    pub fn closed_now(&self) -> bool {
        self.phase_now() == Phase::Closed
    }

    /// RFC 3339, seconds, `Z`: as pages and exports print the window.
    pub fn format_time(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// For people: `7 February 2027, 23:45 UTC` (seconds only when the
    /// time has them). Pages show it inside `<time datetime=...>` with
    /// [`Poll::format_time`], which a browser or a script can localise.
    pub fn format_human(t: DateTime<Utc>) -> String {
        use chrono::Timelike;
        if t.second() == 0 && t.nanosecond() == 0 {
            t.format("%-d %B %Y, %H:%M UTC").to_string()
        } else {
            t.format("%-d %B %Y, %H:%M:%S UTC").to_string()
        }
    }
}

/// The letters of a poll of `n` options, for messages: "`a` or `b`",
/// "`a` to `e`".
pub fn choices(n: usize) -> String {
    match n {
        0 | 1 => "`a`".to_owned(),
        2 => "`a` or `b`".to_owned(),
        n => format!("`a` to `{}`", letter(n.min(MAX_OPTIONS) - 1)),
    }
}

fn check_text(var: &str, what: &str, s: &str, most: usize) -> Result<(), ConfigError> {
    if s.trim().is_empty() {
        return Err(ConfigError(format!("{var}: {what} is empty")));
    }
    let chars = s.chars().count();
    if chars > most {
        return Err(ConfigError(format!(
            "{var}: {what} {s:?} is {chars} characters; at most {most}"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(ConfigError(format!(
            "{var}: {what} {s:?} holds a control character"
        )));
    }
    Ok(())
}

fn parse_time(var: &str, s: &str) -> Result<DateTime<Utc>, ConfigError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ConfigError(format!(
                "{var} is not an RFC 3339 time like 2027-02-07T23:30:00Z: {s:?} ({e})"
            ))
        })
}

impl PollArgs {
    pub fn into_poll(self) -> Result<Poll, ConfigError> {
        check_text(
            "QUESTION",
            "the question",
            &self.question,
            MAX_QUESTION_CHARS,
        )?;
        let options: Vec<String> = match &self.options {
            Some(list) => {
                let labels: Vec<String> = list.split(',').map(|l| l.trim().to_owned()).collect();
                // The older variables may still be set by a deploy file
                // next to OPTIONS; agreeing they are harmless, disagreeing
                // one of them is a mistake the operator must settle.
                for (var, old, i) in [
                    ("OPTION_A", &self.option_a, 0),
                    ("OPTION_B", &self.option_b, 1),
                ] {
                    if let Some(old) = old {
                        if labels.get(i).map(String::as_str) != Some(old.trim()) {
                            return Err(ConfigError(format!(
                                "{var} ({old:?}) and OPTIONS ({list:?}) disagree on option {}; set only OPTIONS",
                                letter(i)
                            )));
                        }
                    }
                }
                labels
            }
            None => vec![
                self.option_a
                    .unwrap_or_else(|| DEFAULT_OPTIONS[0].to_owned()),
                self.option_b
                    .unwrap_or_else(|| DEFAULT_OPTIONS[1].to_owned()),
            ],
        };
        if !(MIN_OPTIONS..=MAX_OPTIONS).contains(&options.len()) {
            return Err(ConfigError(format!(
                "OPTIONS: {MIN_OPTIONS} to {MAX_OPTIONS} comma-separated labels, not {}",
                options.len()
            )));
        }
        for (i, label) in options.iter().enumerate() {
            check_text(
                "OPTIONS",
                &format!("option {}", letter(i)),
                label,
                MAX_LABEL_CHARS,
            )?;
            if let Some(j) = options[..i]
                .iter()
                .position(|o| o.to_lowercase() == label.to_lowercase())
            {
                return Err(ConfigError(format!(
                    "OPTIONS: options {} and {} are both {label:?}",
                    letter(j),
                    letter(i)
                )));
            }
        }
        // Empty is unset: the deploy files pass `${POLL_CLOSES:-}` through.
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let opens = set(&self.poll_opens)
            .map(|s| parse_time("POLL_OPENS", &s))
            .transpose()?;
        let closes = set(&self.poll_closes)
            .map(|s| parse_time("POLL_CLOSES", &s))
            .transpose()?;
        if let (Some(o), Some(c)) = (opens, closes) {
            if c <= o {
                return Err(ConfigError(format!(
                    "POLL_CLOSES ({}) must be after POLL_OPENS ({})",
                    Poll::format_time(c),
                    Poll::format_time(o)
                )));
            }
        }
        if self.results_visible == ResultsVisible::AfterClose && closes.is_none() {
            return Err(ConfigError(
                "RESULTS_VISIBLE=after_close needs POLL_CLOSES: without a close the count would stay hidden".into(),
            ));
        }
        Ok(Poll {
            question: self.question.trim().to_owned(),
            options,
            opens,
            closes,
            results_visible: self.results_visible,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PollArgs {
        PollArgs {
            question: DEFAULT_QUESTION.to_owned(),
            ..PollArgs::default()
        }
    }

    fn err(a: PollArgs) -> String {
        a.into_poll().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_cats_or_dogs_always_open_and_visible() {
        let p = args().into_poll().unwrap();
        assert_eq!(p, Poll::default());
        assert_eq!(p.option_index("a"), Some(0));
        assert_eq!(p.option_index("b"), Some(1));
        assert_eq!(p.option_index("c"), None);
        assert_eq!(p.phase_now(), Phase::Open);
        assert!(p.counts_public_now());
    }

    #[test]
    fn options_are_lettered_in_order_and_the_older_variables_still_work() {
        let mut a = args();
        a.options = Some("Red, Green,Blue ,Cyan,Pink".into());
        let p = a.into_poll().unwrap();
        let letters: Vec<_> = p.letters().collect();
        assert_eq!(
            letters,
            [
                ('a', "Red"),
                ('b', "Green"),
                ('c', "Blue"),
                ('d', "Cyan"),
                ('e', "Pink")
            ]
        );
        assert_eq!(p.option_index("e"), Some(4));
        assert_eq!(
            p.option_index("f"),
            None,
            "a letter past the poll's options"
        );
        assert_eq!(p.option_index("A"), None);
        assert_eq!(p.option_index("ab"), None);

        let mut a = args();
        a.option_a = Some("Tea".into());
        assert_eq!(a.into_poll().unwrap().options, ["Tea", "Dogs"]);

        let mut a = args();
        a.options = Some("Tea,Coffee".into());
        a.option_a = Some("Tea".into());
        assert_eq!(
            a.into_poll().unwrap().options,
            ["Tea", "Coffee"],
            "agreeing is fine"
        );
    }

    #[test]
    fn bad_options_are_refused_naming_the_variable() {
        let mut a = args();
        a.options = Some("Tea,Coffee".into());
        a.option_b = Some("Juice".into());
        let e = err(a);
        assert!(e.contains("OPTION_B") && e.contains("OPTIONS"), "{e}");

        let mut a = args();
        a.options = Some("Only".into());
        assert!(err(a).starts_with("OPTIONS: 2 to 12"));
        let mut a = args();
        a.options = Some(
            (0..13)
                .map(|i| format!("o{i}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        assert!(err(a).contains("not 13"));
        let mut a = args();
        a.options = Some("Tea,,Coffee".into());
        assert!(err(a).contains("option b is empty"));
        let mut a = args();
        a.options = Some("Tea,Co\u{7}ffee".into());
        assert!(err(a).contains("control character"));
        let mut a = args();
        a.options = Some(format!("Tea,{}", "x".repeat(61)));
        assert!(err(a).contains("at most 60"));
        let mut a = args();
        a.options = Some("Tea,tea".into());
        assert!(err(a).contains("both"));
        let mut a = args();
        a.question = " ".into();
        assert!(err(a).starts_with("QUESTION"));
    }

    #[test]
    fn the_window_is_open_from_the_opening_to_just_before_the_close() {
        let utc = parse_time("POLL_OPENS", "2027-02-07T23:30:00Z").unwrap();
        let offset = parse_time("POLL_CLOSES", "2027-02-08T00:30:00+01:00").unwrap();
        assert_eq!(utc, offset, "the same instant in another offset");

        let mut a = args();
        a.poll_opens = Some("2027-02-07T23:30:00Z".into());
        a.poll_closes = Some("2027-02-07T23:45:00Z".into());
        let p = a.into_poll().unwrap();
        let opens = p.opens.unwrap().timestamp_micros();
        let closes = p.closes.unwrap().timestamp_micros();
        assert_eq!(p.phase_at(opens - 1), Phase::NotOpen);
        assert_eq!(p.phase_at(opens), Phase::Open);
        assert_eq!(p.phase_at(closes - 1), Phase::Open);
        assert_eq!(p.phase_at(closes), Phase::Closed);
        assert!(p.counts_stamp(closes - 1));
        assert!(!p.counts_stamp(closes));
        assert_eq!(Phase::Closed.refusal_reason(), Some("poll_closed"));
        assert_eq!(Phase::NotOpen.refusal_reason(), Some("poll_not_open"));
        assert_eq!(Poll::format_time(p.closes.unwrap()), "2027-02-07T23:45:00Z");
        assert_eq!(
            Poll::format_human(p.closes.unwrap()),
            "7 February 2027, 23:45 UTC"
        );
    }

    #[test]
    fn a_worker_refuses_an_option_the_poll_lacks_and_a_stamp_at_the_close() {
        let mut a = args();
        a.options = Some("Red,Green,Blue,Cyan,Pink".into());
        a.poll_closes = Some("2027-02-07T23:45:00Z".into());
        let p = a.into_poll().unwrap();
        let closes = p.closes.unwrap().timestamp_micros();
        assert_eq!(p.vote_options().len(), 5);
        assert_eq!(p.vote_option("e"), Some(VoteOption::E));
        assert_eq!(p.vote_option("f"), None);
        assert_eq!(p.label(VoteOption::C), Some("Blue"));
        assert_eq!(p.label(VoteOption::F), None);
        assert_eq!(p.refuses_count(VoteOption::E, closes - 1), None);
        let late = p.refuses_count(VoteOption::A, closes).unwrap();
        assert!(
            late.starts_with("poll_closed: ") && late.contains("2027-02-07T23:45:00Z"),
            "{late}"
        );
        let bad = p.refuses_count(VoteOption::F, 1).unwrap();
        assert!(
            bad.starts_with("bad_option: option `f`") && bad.contains("`a` to `e`"),
            "{bad}"
        );
        assert!(Poll::default()
            .refuses_count(VoteOption::B, i64::MAX)
            .is_none());
        assert_eq!(choices(2), "`a` or `b`");
        assert_eq!(choices(12), "`a` to `l`");
    }

    #[test]
    fn an_empty_window_setting_is_unset() {
        let mut a = args();
        a.poll_opens = Some(String::new());
        a.poll_closes = Some(" ".into());
        let p = a.into_poll().unwrap();
        assert_eq!((p.opens, p.closes), (None, None));
    }

    #[test]
    fn bad_windows_are_refused() {
        let mut a = args();
        a.poll_closes = Some("tomorrow".into());
        assert!(err(a).starts_with("POLL_CLOSES is not an RFC 3339 time"));
        let mut a = args();
        a.poll_opens = Some("2027-02-07T23:30:00Z".into());
        a.poll_closes = Some("2027-02-07T23:30:00Z".into());
        assert!(err(a).contains("must be after POLL_OPENS"));
    }

    #[test]
    fn after_close_hides_the_count_until_the_close() {
        let mut a = args();
        a.results_visible = ResultsVisible::AfterClose;
        assert!(err(a.clone()).contains("needs POLL_CLOSES"));
        a.poll_closes = Some(Poll::format_time(Utc::now() + chrono::Duration::hours(1)));
        let mut p = a.into_poll().unwrap();
        assert!(!p.counts_public_now(), "before the close: hidden");
        p.closes = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(p.counts_public_now());
    }
}
