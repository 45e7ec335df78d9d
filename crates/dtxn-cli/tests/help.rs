//! The help of every command reads for a new user: no references to
//! development issues.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(args)
        .arg("--help")
        .output()
        .expect("the dtxn binary runs");
    assert!(output.status.success(), "{args:?} --help: {output:?}");
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

#[test]
fn no_help_mentions_issues() {
    let mut commands = vec!["", "demo", "service", "serve", "loadgen"];
    if cfg!(feature = "bench") {
        commands.push("bench");
    }
    if cfg!(feature = "soak") {
        commands.push("soak");
    }
    for command in commands {
        let args: Vec<&str> = [command].into_iter().filter(|c| !c.is_empty()).collect();
        let text = help(&args);
        assert!(
            !text.to_lowercase().contains("issue"),
            "`dtxn {command} --help` mentions an issue:\n{text}"
        );
    }
}

#[cfg(feature = "bench")]
#[test]
fn bench_help_names_what_it_compares() {
    let text = help(&["bench"]);
    for needle in ["floor", "baseline", "performance targets"] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
}

#[test]
fn top_level_help_marks_the_demo_options() {
    let text = help(&[]);
    assert!(
        text.contains("Demo options (when no command is given)"),
        "{text}"
    );
}
