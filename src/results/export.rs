//! The count for the day after: `GET /api/results.csv`,
//! `GET /api/results.json` and `results export`, all from one [`Export`]
//! built from a tally's [`Snapshot`]: the final count per option (letter,
//! label, votes), per capture node, the window, and when the count was
//! final. An export says `final` only when the snapshot did (the poll
//! closed and settled, every queue answered empty before the count was
//! read); otherwise it says why not.

use std::time::Duration;

use serde::Serialize;

use crate::actors::tally::{tally_once, Snapshot, Window, SETTLE_AFTER_CLOSE};
use crate::config::ExposeSecret;

use super::settings::{ExportFormat, ExportSettings};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OptionVotes {
    pub option: String,
    pub label: String,
    pub votes: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeVotes {
    pub node: String,
    pub votes: i64,
}

/// The JSON export; the CSV holds the same.
#[derive(Clone, Debug, Serialize)]
pub struct Export {
    pub question: String,
    pub window: Window,
    pub options: Vec<OptionVotes>,
    pub total: i64,
    pub nodes: Vec<NodeVotes>,
    pub backlog: i64,
    pub unreachable_queues: usize,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// When the count was found final (RFC 3339), if it is.
    pub final_at: Option<String>,
    pub as_of: String,
    /// Why the count is not final, if it is not.
    pub not_final: Option<String>,
}

impl Export {
    pub fn from_snapshot(s: &Snapshot) -> Export {
        Export {
            question: s.question.clone(),
            window: s.window.clone(),
            options: s
                .options
                .iter()
                .map(|o| OptionVotes {
                    option: o.option.clone(),
                    label: o.label.clone(),
                    votes: o.count,
                })
                .collect(),
            total: s.total,
            nodes: s
                .nodes
                .iter()
                .map(|n| NodeVotes {
                    node: n.node.clone(),
                    votes: n.count,
                })
                .collect(),
            backlog: s.backlog,
            unreachable_queues: s.unreachable_queues,
            is_final: s.is_final,
            final_at: s.final_at.clone().filter(|_| s.is_final),
            as_of: s.as_of.clone(),
            not_final: not_final(s),
        }
    }

    /// One table, `record,key,label,value`, a row per fact: the question,
    /// the window, each option, the total, each node, the backlog, whether
    /// and since when it is final, and as of when.
    pub fn csv(&self) -> String {
        let mut out = String::from("record,key,label,value\r\n");
        let mut row = |record: &str, key: &str, label: &str, value: &str| {
            for (i, f) in [record, key, label, value].into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&csv_field(f));
            }
            out.push_str("\r\n");
        };
        row("question", "", &self.question, "");
        row(
            "window",
            "opens",
            "",
            self.window.opens.as_deref().unwrap_or(""),
        );
        row(
            "window",
            "closes",
            "",
            self.window.closes.as_deref().unwrap_or(""),
        );
        for o in &self.options {
            row("option", &o.option, &o.label, &o.votes.to_string());
        }
        row("total", "", "", &self.total.to_string());
        for n in &self.nodes {
            row("node", &n.node, "", &n.votes.to_string());
        }
        row("backlog", "", "", &self.backlog.to_string());
        row(
            "unreachable_queues",
            "",
            "",
            &self.unreachable_queues.to_string(),
        );
        row(
            "final",
            "",
            "",
            if self.is_final { "true" } else { "false" },
        );
        row("final_at", "", "", self.final_at.as_deref().unwrap_or(""));
        row("as_of", "", "", &self.as_of);
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an export serialises") + "\n"
    }
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break, its
/// quotes doubled. Text a spreadsheet would run as a formula (`=`, `+`,
/// `-`, `@` first) gets a leading `'`, as OWASP advises: a label is the
/// operator's text and a node name a capture node's, and opening the
/// export must not run either.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Why `s` is not final, in words; `None` when it is.
pub fn not_final(s: &Snapshot) -> Option<String> {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            one.to_owned()
        } else {
            format!("{n} {many}")
        }
    };
    Some(if s.is_final {
        return None;
    } else if s.error.is_some() {
        "the count could not be read".to_owned()
    } else if s.window.phase != "closed" && s.window.closes.is_some() {
        "voting has not closed".to_owned()
    } else if s.unreachable_queues > 0 {
        format!(
            "{} did not answer: what it holds is unknown",
            plural(s.unreachable_queues, "a vote queue", "vote queues")
        )
    } else if s.backlog > 0 {
        format!(
            "{} still queued",
            plural(s.backlog as usize, "1 vote is", "votes are")
        )
    } else {
        format!(
            "no vote queue was given to check (REDIS_URLS or REDIS_DNS), or voting closed less than {} s ago",
            SETTLE_AFTER_CLOSE.as_secs()
        )
    })
}

/// How long the export waits for a database connection.
const EXPORT_DB_TIMEOUT: Duration = Duration::from_secs(10);

/// `results export`: one tally, as the node's, then the export in the
/// asked format. `Err` only when the count could not be read at all.
pub async fn run(settings: ExportSettings) -> Result<(Export, String), String> {
    let count = settings.count;
    let pool = crate::db::pool(count.database_url.expose_secret(), 1, EXPORT_DB_TIMEOUT);
    let (mut snap, _) = tally_once(
        pool,
        count.endpoints,
        count.stream_key,
        count.poll,
        Vec::new(),
    )
    .await;
    if snap.error.is_some() {
        return Err(
            "cannot read the count (the database's own error is in the log with RUST_LOG=warn)"
                .into(),
        );
    }
    if snap.is_final {
        snap.final_at = Some(snap.as_of.clone());
    }
    let export = Export::from_snapshot(&snap);
    let text = match settings.format {
        ExportFormat::Csv => export.csv(),
        ExportFormat::Json => export.json(),
    };
    Ok((export, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_as_rfc_4180_says_and_formulas_neutralised() {
        assert_eq!(csv_field("Cats"), "Cats");
        assert_eq!(csv_field("Tea, please"), "\"Tea, please\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+2"), "'=1+2");
        assert_eq!(csv_field("-5"), "-5", "a number is a number");
        assert_eq!(csv_field("@home, now"), "\"'@home, now\"");
    }
}
