//! `cluster backup` and `cluster restore` (issue 17, item 4): real
//! `cluster up`, loadgen, pg_dump and pg_restore processes; the restored
//! count compared voter by voter with the one backed up.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster_proc::{sql, sql_counts, stored_votes};
use common::{bin, spawn_cluster, wait_until, Up};

/// `cluster ARGS`: (exit code, stdout, stderr).
fn cluster(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(bin::CLUSTER)
        .args(args)
        .output()
        .expect("run cluster");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore(data: &Path, file: &Path, force: bool) -> (i32, String, String) {
    let mut args = vec!["restore".as_ref(), "--data-dir".as_ref(), data.as_os_str()];
    if force {
        args.push("--force".as_ref());
    }
    args.push(file.as_os_str());
    cluster(&args)
}

#[test]
fn a_restore_from_a_backup_reproduces_the_count_and_never_overwrites_votes_unasked() {
    common::require_program("redis-server", "redis-server");
    common::require_program("haproxy", "haproxy");
    let common::TestCluster { up, dir } = spawn_cluster("vs-backup-", 2, 1, &[]);
    let status = up
        .loadgen(400, &dir.path().join("load.md"))
        .args(["--final-timeout-secs", "60"])
        .status()
        .expect("run loadgen");
    assert_eq!(status.code(), Some(0), "loadgen's count is exact");
    let counted = stored_votes(&up.database_url());
    let per_option = sql_counts(&up.database_url());
    assert_eq!(counted.len(), 400, "one row per voter");

    let file = dir.path().join("backups").join("count.dump");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let (code, stdout, stderr) = cluster(&[
        "backup".as_ref(),
        "--data-dir".as_ref(),
        up.data.as_os_str(),
        "--out".as_ref(),
        file.as_os_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let bytes = std::fs::metadata(&file).expect("the backup").len();
    assert_eq!(
        stdout.trim(),
        format!("backup: {} ({bytes} bytes, 400 voters)", file.display())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only its owner reads the count");
    let left: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("count.dump")],
        "no temporary file left"
    );

    let data = up.data.clone();
    assert_eq!(up.stop(), 0);
    let (code, _, stderr) = cluster(&["backup".as_ref(), "--data-dir".as_ref(), data.as_os_str()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("is not running") && stderr.contains("cluster up --data-dir"),
        "{stderr}"
    );

    // Something that is not an archive is refused before anything is made.
    let junk = dir.path().join("junk.dump");
    std::fs::write(&junk, "not a dump").unwrap();
    let nowhere = dir.path().join("never-made");
    let (code, _, stderr) = restore(&nowhere, &junk, false);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a backup"), "{stderr}");
    assert!(!nowhere.exists());

    // A new data directory restored from the backup, then served by
    // `cluster up`: the same voters with the same votes.
    let fresh = dir.path().join("restored");
    let (code, stdout, stderr) = restore(&fresh, &file, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(400 voters)"), "{stdout}");
    let again = Up::start(&fresh, 1, 1);
    assert_eq!(stored_votes(&again.database_url()), counted);
    assert_eq!(sql_counts(&again.database_url()), per_option);
    assert!(
        wait_until(Duration::from_secs(30), || again.results_total()
            == Some(400)),
        "results shows the restored count"
    );

    // Restoring onto a database that holds votes is refused and changes
    // nothing; --force replaces them with the backup's.
    sql(
        &again.database_url(),
        "DELETE FROM votes WHERE voter_id < '8'",
    );
    let kept = stored_votes(&again.database_url());
    assert!(!kept.is_empty() && kept.len() < 400);
    let (code, _, stderr) = restore(&fresh, &file, false);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("restore needs the cluster stopped"),
        "{stderr}"
    );
    assert_eq!(again.stop(), 0);
    let (code, _, stderr) = restore(&fresh, &file, false);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("holds {} voters' votes", kept.len()))
            && stderr.contains("--force"),
        "{stderr}"
    );
    {
        let (_pg, url) = common::postgres::on_cluster_data(&fresh);
        assert_eq!(stored_votes(&url), kept, "the refusal lost nothing");
    }
    let (code, stdout, stderr) = restore(&fresh, &file, true);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(400 voters)"), "{stdout}");
    let (_pg, url) = common::postgres::on_cluster_data(&fresh);
    assert_eq!(stored_votes(&url), counted);
}
