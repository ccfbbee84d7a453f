//! `cairn log` and `cairn stat` show what did not commit, after the process that ran it is
//! gone: a coordinator's aborted epoch (and its directory's global checkpoints).

mod common;

use cairn::{Coordinator, CoordinatorOptions, Options};
use common::{cairn, stdout, Result, TempDir};

#[test]
fn log_shows_global_checkpoints_and_an_aborted_epoch() -> Result {
    let tmp = TempDir::new("log-not-committed")?;
    let dir = tmp.join("job");
    {
        let opts = CoordinatorOptions::new(2).store_options(Options::new().sync(false));
        let (mut coord, shards) = Coordinator::open(&dir, opts)?;
        shards[0].store().table("t")?.put(b"k", b"v")?;
        for b in coord.trigger(7, b"offset=7")? {
            shards[b.shard].checkpoint(&b, b"")?;
        }
        coord.wait(7)?;
        let barriers = coord.trigger(9, b"offset=9")?;
        shards[0].checkpoint(&barriers[0], b"")?.wait()?;
        // Shard 1 fails: its metadata is past the bound.
        assert!(shards[1].checkpoint(&barriers[1], &vec![0u8; 2 << 20]).is_err());
        assert!(coord.wait(9).is_err());
    }
    let out = cairn(&tmp.0, &["log", &tmp.arg("job")?])?;
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("epoch            7"), "{text}");
    assert!(text.lines().any(|l| l.starts_with('*') && l.contains("epoch            7")), "{text}");
    assert!(text.contains("not committed (1)") && text.contains("epoch 9 aborted: shard 1 did not commit"), "{text}");
    let stat = stdout(&cairn(&tmp.0, &["stat", &tmp.arg("job/global")?])?);
    assert!(stat.contains("not_committed: 1 (1 aborted, 0 failed"), "{stat}");
    Ok(())
}
