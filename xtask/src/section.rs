//! A section of a Markdown file between `<!-- NAME:begin -->` and
//! `<!-- NAME:end -->`: replaced where it is, else appended.

use std::path::Path;

use crate::Res;

pub const BENCHMARKS: &str = "BENCHMARKS.md";

/// `section` (starting with the begin marker and ending with the end
/// marker) replaces NAME's section of `text`, or is appended to it.
pub fn replace(text: &str, name: &str, section: &str) -> String {
    let section = section.trim().to_owned() + "\n";
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    if let Some(b) = text.find(&begin) {
        if let Some(e) = text[b..].find(&end) {
            let mut after = b + e + end.len();
            if text[after..].starts_with('\n') {
                after += 1;
            }
            return format!("{}{section}{}", &text[..b], &text[after..]);
        }
    }
    format!("{}\n\n{section}", text.trim_end())
}

/// Writes NAME's section of BENCHMARKS.md (made if missing), then prints it.
pub fn write_benchmarks(name: &str, section: &str) -> Res<()> {
    write(Path::new(BENCHMARKS), name, section, Some(
        "# Benchmarks\n\nEach section is written by its `make bench-*` target; rerun it to refresh.\n\n",
    ))?;
    print!("{}", section.trim().to_owned() + "\n");
    Ok(())
}

/// Writes NAME's section of `path`; a missing file starts as `fresh`
/// (or empty).
pub fn write(path: &Path, name: &str, section: &str, fresh: Option<&str>) -> Res<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh.unwrap_or("").to_owned(),
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    let out = if text.is_empty() {
        section.trim().to_owned() + "\n"
    } else {
        replace(&text, name, section)
    };
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()).into())
}

#[cfg(test)]
mod tests {
    use super::replace;

    #[test]
    fn replaces_in_place_or_appends() {
        let text = "# B\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n\nafter\n";
        assert_eq!(
            replace(text, "a", "<!-- a:begin -->\nnew\n<!-- a:end -->"),
            "# B\n\n<!-- a:begin -->\nnew\n<!-- a:end -->\n\nafter\n"
        );
        assert_eq!(
            replace("# B\n", "c", "<!-- c:begin -->\nx\n<!-- c:end -->\n"),
            "# B\n\n<!-- c:begin -->\nx\n<!-- c:end -->\n"
        );
    }
}
