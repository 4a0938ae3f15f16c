//! `--shard I/N` and `--shard auto`: which slice of a sweep this process runs. `auto` reads the
//! array-job runner's environment: Slurm (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`,
//! `SLURM_ARRAY_TASK_MIN` for arrays that do not start at 0) or a Kubernetes Indexed Job
//! (`JOB_COMPLETION_INDEX`, with the count in `JOULECUT_SHARD_COUNT`: Kubernetes does not put
//! `.spec.completions` in the environment, so the Job's pod template sets it).

use super::error::bad_input;

const HINT: &str = "use --shard I/N with 0 <= I < N (e.g. --shard 0/4), or --shard auto inside a Slurm array job or a Kubernetes Indexed Job";

/// Parses `--shard`: `I/N` or `auto` (from the process environment).
pub(super) fn parse(s: &str) -> anyhow::Result<(usize, usize)> {
    if s == "auto" {
        return from_env(|k| std::env::var(k).ok());
    }
    let bad = || bad_input(format!("bad --shard `{s}`"), HINT);
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    checked(i, n).ok_or_else(bad)
}

fn checked(i: usize, n: usize) -> Option<(usize, usize)> {
    (n > 0 && i < n).then_some((i, n))
}

/// `--shard auto` from the variables `get` returns.
fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<(usize, usize)> {
    let num = |k: &str| -> anyhow::Result<Option<usize>> {
        get(k)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    bad_input(format!("--shard auto: {k}=`{v}` is not a number"), HINT)
                })
            })
            .transpose()
    };
    let (i, n, from) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let n = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
            bad_input(
                "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not",
                HINT,
            )
        })?;
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        // --array=0-6:2 runs ids 0, 2, 4, 6: slices 0..4
        let i = id
            .checked_sub(min)
            .filter(|d| d % step == 0)
            .map(|d| d / step)
            .ok_or_else(|| {
                bad_input(
                    format!("--shard auto: SLURM_ARRAY_TASK_ID {id} is not on the array {min}, {min}+{step}, ..."),
                    HINT,
                )
            })?;
        (i, n, "Slurm array")
    } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
        let n = num("JOULECUT_SHARD_COUNT")?.ok_or_else(|| {
            bad_input(
                "--shard auto: JOB_COMPLETION_INDEX is set but JOULECUT_SHARD_COUNT is not",
                "set JOULECUT_SHARD_COUNT to the Job's .spec.completions in its pod template (scripts/k8s-bench-job.yaml)",
            )
        })?;
        (i, n, "Kubernetes Indexed Job")
    } else {
        return Err(bad_input(
            "--shard auto: neither a Slurm array task (SLURM_ARRAY_TASK_ID) nor a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) is in the environment",
            HINT,
        ));
    };
    checked(i, n).ok_or_else(|| {
        bad_input(
            format!("--shard auto: task {i} of {n} from the {from} is not a valid slice"),
            "a Slurm array must be a range (--array=0-7, 1-8 or 0-14:2), not a list",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn explicit_slices() {
        assert_eq!(parse("0/4").unwrap(), (0, 4));
        assert_eq!(parse("3/4").unwrap(), (3, 4));
        for bad in ["4/4", "1/0", "x/2", "1", "-1/2", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slurm_arrays_from_zero_or_from_one() {
        let e = [
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        assert_eq!(from_env(env(&e)).unwrap(), (1, 2));
        let e = [
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ];
        assert_eq!(from_env(env(&e)).unwrap(), (7, 8));
        let e = [
            ("SLURM_ARRAY_TASK_ID", "6"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(from_env(env(&e)).unwrap(), (3, 4));
        // a list array (--array=1,5,9) has no step to undo: refused, not silently wrong
        let e = [
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        assert!(from_env(env(&e)).is_err());
        assert!(from_env(env(&[("SLURM_ARRAY_TASK_ID", "0")])).is_err());
    }

    #[test]
    fn kubernetes_indexed_jobs_need_the_count() {
        let e = [("JOB_COMPLETION_INDEX", "2"), ("JOULECUT_SHARD_COUNT", "3")];
        assert_eq!(from_env(env(&e)).unwrap(), (2, 3));
        let err = from_env(env(&[("JOB_COMPLETION_INDEX", "2")])).unwrap_err();
        assert!(err.to_string().contains("JOULECUT_SHARD_COUNT"));
        assert!(from_env(env(&[])).is_err());
        assert!(from_env(env(&[("JOB_COMPLETION_INDEX", "two")])).is_err());
    }
}
