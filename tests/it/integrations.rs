//! What users copy from `integrations/`: the CI jobs (valid against the GitHub Actions and GitLab
//! CI schemas from SchemaStore, as check-jsonschema from PyPI ships them, and doing what the
//! README says they do, with flags `tracecov run` has), and the README's snippets, which must be
//! the files' own text.

use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

use crate::common::repo_root;
use crate::python_sdk::python;

/// `check-jsonschema --builtin-schema vendor.SCHEMA FILE`: its success and what it said.
fn check_schema(schema: &str, file: &Path) -> (bool, String) {
    let out = Command::new(python().with_file_name("check-jsonschema"))
        .args(["--builtin-schema", &format!("vendor.{schema}")])
        .arg(file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn yaml(rel: &str) -> (String, Value) {
    let text = std::fs::read_to_string(repo_root().join(rel)).unwrap();
    let value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    (text, value)
}

/// Every `run`/`script` line of a job that starts `tracecov run`, joined.
fn tracecov_run(commands: &[&str]) -> String {
    let found: Vec<&&str> = commands
        .iter()
        .filter(|c| c.trim_start().starts_with("tracecov run"))
        .collect();
    assert_eq!(found.len(), 1, "one `tracecov run` in {commands:?}");
    found[0].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A job's `tracecov run` writes the JUnit and HTML reports and gates the run.
fn assert_reports_and_gate(run: &str) {
    for wanted in [
        "--report junit=tracecov-junit.xml",
        "--report html=tracecov-report.html",
        "--no-failures",
        "--min-edge-coverage",
        " -- ",
    ] {
        assert!(run.contains(wanted), "{wanted:?} missing from: {run}");
    }
}

#[test]
fn the_github_actions_workflow_is_valid_and_installs_caches_gates_and_publishes() {
    let (text, workflow) = yaml("integrations/ci/github-actions.yml");
    let file = repo_root().join("integrations/ci/github-actions.yml");
    let (ok, said) = check_schema("github-workflows", &file);
    assert!(ok, "{said}");

    let steps = workflow["jobs"]["integration"]["steps"]
        .as_sequence()
        .unwrap();
    let uses: Vec<&str> = steps.iter().filter_map(|s| s["uses"].as_str()).collect();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        uses.iter().any(|u| u.starts_with("actions/cache@")),
        "{uses:?}"
    );
    assert!(
        runs.iter().any(|r| r.contains("cargo install --locked")),
        "{runs:?}"
    );
    let run = tracecov_run(&runs);
    assert_reports_and_gate(&run);
    assert!(run.contains("--github-summary"), "{run}");
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("an upload-artifact step");
    let paths = upload["with"]["path"].as_str().unwrap();
    assert!(
        paths.contains("tracecov-junit.xml") && paths.contains("tracecov-report.html"),
        "{paths}"
    );

    // The schema check can fail: a misspelt key is refused.
    let broken = tempfile::NamedTempFile::with_suffix(".yml").unwrap();
    std::fs::write(broken.path(), text.replace("runs-on:", "run-on:")).unwrap();
    let (ok, said) = check_schema("github-workflows", broken.path());
    assert!(!ok, "a workflow without runs-on passed: {said}");
}

#[test]
fn the_gitlab_ci_job_is_valid_and_installs_caches_gates_and_publishes() {
    let (text, config) = yaml("integrations/ci/gitlab-ci.yml");
    let file = repo_root().join("integrations/ci/gitlab-ci.yml");
    let (ok, said) = check_schema("gitlab-ci", &file);
    assert!(ok, "{said}");

    let job = &config["integration-tests"];
    let lines = |key: &str| -> Vec<&str> {
        job[key]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect()
    };
    let before = lines("before_script");
    assert!(
        before.iter().any(|l| l.contains("cargo install --locked")),
        "{before:?}"
    );
    let cached: Vec<&str> = job["cache"]["paths"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(cached, [".tracecov/bin/tracecov"]);
    let run = tracecov_run(&lines("script"));
    assert_reports_and_gate(&run);
    assert!(
        run.contains("--report markdown=tracecov-summary.md"),
        "{run}"
    );
    let artifacts = &job["artifacts"];
    assert_eq!(artifacts["reports"]["junit"], "tracecov-junit.xml");
    let paths: Vec<&str> = artifacts["paths"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"tracecov-report.html") && paths.contains(&"tracecov-summary.md"),
        "{paths:?}"
    );

    let broken = tempfile::NamedTempFile::with_suffix(".yml").unwrap();
    std::fs::write(
        broken.path(),
        text.replace("when: always", "when: sometimes"),
    )
    .unwrap();
    let (ok, said) = check_schema("gitlab-ci", broken.path());
    assert!(!ok, "artifacts `when: sometimes` passed: {said}");
}

#[test]
fn the_ci_jobs_pass_only_flags_tracecov_run_has() {
    let help = Command::new(env!("CARGO_BIN_EXE_tracecov"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for rel in [
        "integrations/ci/github-actions.yml",
        "integrations/ci/gitlab-ci.yml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(rel)).unwrap();
        let start = text.find("tracecov run --").unwrap();
        let end = start + text[start..].find(" -- ").unwrap();
        for flag in text[start..end]
            .split_whitespace()
            .filter(|w| w.starts_with("--"))
        {
            let known = help.lines().map(str::trim_start).any(|l| {
                l == flag
                    || l.starts_with(&format!("{flag} "))
                    || l.starts_with(&format!("{flag},"))
            });
            assert!(known, "{rel}: {flag} is no flag of tracecov run");
        }
    }
}

/// README snippets marked `<!-- from PATH -->` on the line before their fence must be that
/// file's text, so what users copy is what the tests run.
#[test]
fn the_readmes_integration_snippets_are_the_files_own_text() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut checked = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .trim()
            .strip_prefix("<!-- from ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "no code block after {line}");
        let snippet: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let file = std::fs::read_to_string(repo_root().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let snippet = snippet.join("\n");
        assert!(
            file.contains(&snippet),
            "the README's snippet from {path} is not in it:\n{snippet}"
        );
        checked.push(path);
    }
    for wanted in [
        "integrations/pytest/conftest.py",
        "tests/js/node-suite/storefront.test.js",
        "tests/js/playwright/storefront.spec.js",
        "tests/js/web/app.js",
    ] {
        assert!(checked.contains(&wanted), "no README snippet from {wanted}");
    }
}
