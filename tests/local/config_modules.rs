//! `docker.daemon`, `k3s.registries` and `containerd.hosts` on the local
//! host, on real files, through the plumb binary: merge and replace, drift
//! of managed and unmanaged keys, invalid files refused, rendered files that
//! read back as the plan's structure, and credentials in no output.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{resource, Outcome, Scratch};
use serde_json::{json, Value};

fn fields(r: &Value) -> Vec<String> {
    r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap().to_string())
        .collect()
}

/// `plumb CMD plan.yaml --var root=… --format FORMAT` plus `extra`.
fn in_format(s: &Scratch, cmd: &str, format: &str, extra: &[&str]) -> Outcome {
    let mut p = common::Plumb::new()
        .arg(cmd)
        .arg(s.path().join("plan.yaml"))
        .arg("--var")
        .arg(format!("root={}", s.root().display()))
        .args(["--format", format]);
    if cmd == "apply" {
        p = p.arg("--yes");
    }
    p.args(extra).run()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// A daemon.json as a person wrote it: four-space indents, their key order.
const HAND_WRITTEN: &str = r#"{
    "storage-driver": "overlay2",
    "log-opts": {
        "compress": "true"
    },
    "debug": false,
    "zz": [1, 2]
}
"#;

const DAEMON_PLAN: &str = r#"
resources:
  - id: daemon-json
    docker.daemon:
      path: "{{ root }}/daemon.json"
      settings:
        registry-mirrors: ["https://harbor.example.net"]
        log-opts: {max-size: 100m, max-file: "3"}
        debug: true
"#;

fn daemon_json(s: &Scratch) -> Value {
    serde_json::from_str(&fs::read_to_string(s.root().join("daemon.json")).unwrap()).unwrap()
}

#[test]
fn docker_daemon_merges_keeping_other_keys_and_their_order() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    fs::write(s.root().join("daemon.json"), HAND_WRITTEN).unwrap();
    s.plan(DAEMON_PLAN);

    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    let r = resource(&d, "daemon-json");
    assert_eq!(
        fields(&r),
        ["log-opts.max-size", "log-opts.max-file", "debug", "registry-mirrors"]
    );
    let diff = r["diff"].as_str().unwrap();
    assert!(
        diff.contains("+    \"max-size\": \"100m\"") && diff.contains("-    \"debug\": false"),
        "{diff}"
    );
    let text = in_format(&s, "diff", "text", &[]);
    assert!(
        text.stdout.contains("log-opts.max-size: (none) → 100m"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("debug: false → true"), "{}", text.stdout);
    assert_eq!(
        fs::read_to_string(s.root().join("daemon.json")).unwrap(),
        HAND_WRITTEN,
        "diff changes nothing"
    );

    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    let doc = daemon_json(&s);
    assert_eq!(
        keys(&doc),
        ["storage-driver", "log-opts", "debug", "zz", "registry-mirrors"]
    );
    assert_eq!(
        doc["log-opts"],
        json!({"compress": "true", "max-size": "100m", "max-file": "3"})
    );
    assert_eq!(doc["zz"], json!([1, 2]));
    assert!(resource(&a, "daemon-json")["notes"]
        .to_string()
        .contains("backup of the old file"));

    let again = s.run("apply", &[]);
    assert_eq!(again.summary("changed"), 0, "{}", again.stdout);
    assert_eq!(s.run("diff", &[]).code, 0);

    // An unmanaged key edited by hand, in another layout: not drift.
    let mut edited = daemon_json(&s);
    edited["storage-driver"] = json!("zfs");
    edited["labels"] = json!(["x"]);
    let compact = serde_json::to_string(&edited).unwrap();
    fs::write(s.root().join("daemon.json"), &compact).unwrap();
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 0, "an unmanaged key is not drift: {}", d.stdout);
    assert_eq!(s.run("apply", &[]).summary("changed"), 0);
    assert_eq!(
        fs::read_to_string(s.root().join("daemon.json")).unwrap(),
        compact,
        "left as it was"
    );

    // A managed key edited by hand: drift, and apply restores only it.
    edited["log-opts"]["max-size"] = json!("10m");
    fs::write(s.root().join("daemon.json"), serde_json::to_string(&edited).unwrap()).unwrap();
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2, "{}", d.stdout);
    let r = resource(&d, "daemon-json");
    assert_eq!(fields(&r), ["log-opts.max-size"]);
    assert_eq!(r["changes"][0]["from"], "10m");
    assert_eq!(s.run("apply", &[]).code, 0);
    let doc = daemon_json(&s);
    assert_eq!(doc["log-opts"]["max-size"], "100m");
    assert_eq!(doc["storage-driver"], "zfs");
    assert_eq!(doc["labels"], json!(["x"]));
}

#[test]
fn docker_daemon_replace_makes_the_file_exactly_the_settings() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    fs::write(s.root().join("daemon.json"), HAND_WRITTEN).unwrap();
    s.plan(&DAEMON_PLAN.replace("      settings:", "      replace: true\n      settings:"));
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2);
    let f = fields(&resource(&d, "daemon-json"));
    assert!(
        f.contains(&"storage-driver".to_string()) && f.contains(&"log-opts.compress".to_string()),
        "{f:?}"
    );
    assert_eq!(s.run("apply", &[]).code, 0);
    assert_eq!(
        daemon_json(&s),
        json!({"registry-mirrors": ["https://harbor.example.net"], "log-opts": {"max-size": "100m", "max-file": "3"}, "debug": true})
    );
    assert_eq!(keys(&daemon_json(&s)), ["registry-mirrors", "log-opts", "debug"]);
    assert_eq!(s.run("apply", &[]).summary("changed"), 0);
}

#[test]
fn docker_daemon_refuses_invalid_json_and_leaves_it_untouched() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    let broken = "{\n  \"debug\": true,\n  \"log-driver\": \"json-file\"\n  \"oops\": 1\n}\n";
    fs::write(s.root().join("daemon.json"), broken).unwrap();
    s.plan(DAEMON_PLAN);
    for cmd in ["diff", "apply"] {
        let o = s.run(cmd, &[]);
        assert_eq!(o.code, 1, "{cmd}: {}", o.stdout);
        let err = resource(&o, "daemon-json")["error"].as_str().unwrap().to_string();
        assert!(err.contains("not valid JSON") && err.contains("line 4"), "{err}");
        assert!(err.contains("replace: true"), "the way out is named: {err}");
    }
    assert_eq!(fs::read_to_string(s.root().join("daemon.json")).unwrap(), broken);
    // `replace: true` asks for exactly the settings: the broken file goes (backed up).
    s.plan(&DAEMON_PLAN.replace("      settings:", "      replace: true\n      settings:"));
    assert_eq!(s.run("diff", &[]).code, 2);
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    assert_eq!(daemon_json(&s)["debug"], true);
}

#[test]
fn docker_daemon_creates_the_file_and_its_folder() {
    let s = Scratch::new();
    s.plan(&DAEMON_PLAN.replace("{{ root }}/daemon.json", "{{ root }}/etc/docker/daemon.json"));
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2);
    assert_eq!(fields(&resource(&d, "daemon-json"))[0], "state");
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}", a.stdout);
    let text = fs::read_to_string(s.root().join("etc/docker/daemon.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"registry-mirrors": ["https://harbor.example.net"], "log-opts": {"max-size": "100m", "max-file": "3"}, "debug": true})
    );
    assert_eq!(s.run("diff", &[]).code, 0);
}

/// Mock, because no Docker engine can run on the test machine (no daemon,
/// and Debian's docker.io predates `--validate`): a `dockerd` on PATH that
/// answers `--help` like Docker 23+ and rejects a file containing `bad-key`.
/// It checks that plumb wires the staged file to `dockerd --validate
/// --config-file` and keeps the old file when it is rejected.
#[test]
fn docker_daemon_new_file_is_checked_by_dockerd_validate() {
    let s = Scratch::new();
    let bin = s.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = s.path().join("dockerd.log");
    fs::write(
        bin.join("dockerd"),
        format!(
            "#!/bin/sh\ncase \"$1\" in --help) echo '      --validate   Validate daemon configuration and exit';;\n\
             --validate) echo \"$*\" >> '{}'; if grep -q bad-key \"$3\"; then echo 'unknown key: bad-key' >&2; exit 1; fi; echo 'configuration OK';;\nesac\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("dockerd"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    fs::create_dir_all(s.root()).unwrap();
    fs::write(s.root().join("daemon.json"), "{\"debug\": false}\n").unwrap();
    s.plan(&DAEMON_PLAN.replace("debug: true", "debug: true\n        bad-key: 1"));
    let run = |cmd: &str| {
        common::Plumb::new()
            .arg(cmd)
            .arg(s.path().join("plan.yaml"))
            .arg("--var")
            .arg(format!("root={}", s.root().display()))
            .args(["--format", "json", "--yes"])
            .env("PATH", &path)
            .run()
    };
    let a = run("apply");
    assert_eq!(a.code, 1, "{}", a.stdout);
    let err = resource(&a, "daemon-json")["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("unknown key: bad-key") && err.contains("untouched"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(s.root().join("daemon.json")).unwrap(),
        "{\"debug\": false}\n"
    );
    assert!(fs::read_to_string(&log)
        .unwrap()
        .starts_with("--validate --config-file "));
    s.plan(DAEMON_PLAN);
    assert_eq!(run("apply").code, 0);
    assert_eq!(daemon_json(&s)["debug"], true);
}

const REGISTRIES_PLAN: &str = r#"
resources:
  - id: registries
    k3s.registries:
      path: "{{ root }}/registries.yaml"
      mirrors:
        docker.io:
          endpoint: ["https://harbor.example.net", "https://mirror.example.org"]
          rewrite: {"^rancher/(.*)": "mirror/rancher/$1"}
        harbor.example.net:
          endpoint: ["https://harbor.example.net"]
      configs:
        harbor.example.net:
          auth: {username: robot-ci, password: "{{ password }}"}
          tls: {ca_file: /etc/docker/certs.d/harbor.example.net/ca.crt, insecure_skip_verify: false}
        "10.0.0.1:5000":
          auth: {identity_token: "{{ token }}"}
          tls: {insecure_skip_verify: true}
"#;

const PASSWORD: &str = "Pa55-w0rd-never-shown";
const TOKEN: &str = "id-t0ken-never-shown";

#[test]
fn k3s_registries_render_back_to_the_same_structure_and_hide_credentials() {
    let s = Scratch::new();
    fs::create_dir_all(s.root()).unwrap();
    s.plan(REGISTRIES_PLAN);
    let vars = |pw: &str| -> Vec<String> {
        vec![
            "--var".into(),
            format!("password={pw}"),
            "--var".into(),
            format!("token={TOKEN}"),
        ]
    };
    let run_in = |cmd: &str, pw: &str, format: &str, extra: &[&str]| {
        let mut args: Vec<String> = vars(pw);
        args.extend(extra.iter().map(|a| (*a).to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        in_format(&s, cmd, format, &refs)
    };
    let run = |cmd: &str, pw: &str, extra: &[&str]| run_in(cmd, pw, "json", extra);
    let no_secret = |o: &Outcome, what: &str| {
        for secret in [PASSWORD, "Pa55-new", TOKEN, "robot-ci"] {
            assert!(
                !o.stdout.contains(secret) && !o.stderr.contains(secret),
                "{what} shows `{secret}`:\n{}{}",
                o.stdout,
                o.stderr
            );
        }
    };
    for format in ["json", "text", "markdown"] {
        let d = run_in("diff", PASSWORD, format, &[]);
        assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
        // The report is there, in that format (exit 2 is also clap's usage error).
        assert!(d.stdout.contains("registries"), "{format}: {}", d.stdout);
        no_secret(&d, &format!("diff --format {format}"));
    }
    let d = run("diff", PASSWORD, &[]);
    let r = resource(&d, "registries");
    let pw = r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "configs.\"harbor.example.net\".auth.password")
        .unwrap_or_else(|| panic!("the password's change is listed: {r}"));
    assert_eq!(pw["to"], "(sensitive)");
    let tls = fields(&r);
    assert!(
        tls.contains(&"configs.\"10.0.0.1:5000\".tls.insecure_skip_verify".to_string()),
        "{tls:?}"
    );

    let saved = s.path().join("reviewed.json");
    let d = run("diff", PASSWORD, &["--out", saved.to_str().unwrap()]);
    no_secret(&d, "diff --out");
    let saved_text = fs::read_to_string(&saved).unwrap();
    assert!(!saved_text.contains(PASSWORD) && !saved_text.contains(TOKEN));

    let a = run("apply", PASSWORD, &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    no_secret(&a, "apply");
    let file = s.root().join("registries.yaml");
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let on_disk: Value = serde_saphyr::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({
            "mirrors": {
                "docker.io": {"endpoint": ["https://harbor.example.net", "https://mirror.example.org"], "rewrite": {"^rancher/(.*)": "mirror/rancher/$1"}},
                "harbor.example.net": {"endpoint": ["https://harbor.example.net"]}
            },
            "configs": {
                "harbor.example.net": {
                    "auth": {"username": "robot-ci", "password": PASSWORD},
                    "tls": {"ca_file": "/etc/docker/certs.d/harbor.example.net/ca.crt", "insecure_skip_verify": false}
                },
                "10.0.0.1:5000": {"auth": {"identity_token": TOKEN}, "tls": {"insecure_skip_verify": true}}
            }
        })
    );
    assert_eq!(run("apply", PASSWORD, &[]).summary("changed"), 0);

    // A new password: a secret change, no text diff, nothing printed.
    for format in ["json", "text", "markdown"] {
        let d = run_in("diff", "Pa55-new", format, &[]);
        assert_eq!(d.code, 2);
        assert!(d.stdout.contains("auth.password"), "{format}: {}", d.stdout);
        no_secret(&d, &format!("diff of a new password, --format {format}"));
    }
    let d = run("diff", "Pa55-new", &[]);
    assert!(resource(&d, "registries")["diff"].is_null());
    let a = run("apply", "Pa55-new", &[]);
    assert_eq!(a.code, 0);
    no_secret(&a, "apply of a new password");

    // The same settings in another layout are converged; a mode change is not.
    let flow =
        serde_json::to_string(&serde_saphyr::from_str::<Value>(&fs::read_to_string(&file).unwrap()).unwrap()).unwrap();
    fs::write(&file, flow).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(run("diff", "Pa55-new", &[]).code, 0, "JSON is YAML: the same settings");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let d = run("diff", "Pa55-new", &[]);
    assert_eq!(fields(&resource(&d, "registries")), ["mode"]);
    assert_eq!(run("apply", "Pa55-new", &[]).code, 0);
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn k3s_registries_typos_are_errors_with_suggestions() {
    let s = Scratch::new();
    s.plan(
        "resources:\n  - id: r\n    k3s.registries:\n      configs:\n        h.example:\n          tls: {insecure_skip_verfy: true}\n",
    );
    let v = common::Plumb::new()
        .arg("validate")
        .arg(s.path().join("plan.yaml"))
        .run();
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("did you mean `insecure_skip_verify`"), "{}", v.stderr);
}

const HOSTS_PLAN: &str = r#"
resources:
  - id: hub-mirror
    containerd.hosts:
      dir: "{{ root }}/certs.d"
      registry: docker.io
      server: https://registry-1.docker.io
      hosts:
        - url: https://harbor.example.net/v2/dockerhub
          capabilities: [pull, resolve]
          ca: /etc/containerd/certs.d/harbor.example.net/ca.crt
          override_path: true
        - url: http://10.0.0.1:5000
          capabilities: [pull]
          skip_verify: true
"#;

#[test]
fn containerd_hosts_render_back_to_the_same_structure() {
    let s = Scratch::new();
    s.plan(HOSTS_PLAN);
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    let a = s.run("apply", &[]);
    assert_eq!(a.code, 0, "{}{}", a.stdout, a.stderr);
    let file = s.root().join("certs.d/docker.io/hosts.toml");
    let text = fs::read_to_string(&file).unwrap();
    let back: Value = toml::from_str(&text).unwrap();
    assert_eq!(
        back,
        json!({
            "server": "https://registry-1.docker.io",
            "host": {
                "https://harbor.example.net/v2/dockerhub": {
                    "capabilities": ["pull", "resolve"],
                    "ca": "/etc/containerd/certs.d/harbor.example.net/ca.crt",
                    "override_path": true
                },
                "http://10.0.0.1:5000": {"capabilities": ["pull"], "skip_verify": true}
            }
        })
    );
    let first = text.find("[host.\"https://harbor").unwrap();
    let second = text.find("[host.\"http://10.0.0.1").unwrap();
    assert!(first < second, "containerd tries hosts in the file's order: {text}");
    assert_eq!(s.run("apply", &[]).summary("changed"), 0);
    assert_eq!(s.run("diff", &[]).code, 0);

    fs::write(&file, text.replace("skip_verify = true", "skip_verify = false")).unwrap();
    let d = s.run("diff", &[]);
    assert_eq!(d.code, 2, "a hand edit is drift");
    assert_eq!(
        fields(&resource(&d, "hub-mirror")),
        ["host.\"http://10.0.0.1:5000\".skip_verify"]
    );
    let diff = resource(&d, "hub-mirror")["diff"].as_str().unwrap().to_string();
    assert!(
        diff.contains("-skip_verify = false") && diff.contains("+skip_verify = true"),
        "{diff}"
    );
    assert_eq!(s.run("apply", &[]).code, 0);
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
}
