//! Flake registries: the version-2 JSON format and Nix's resolution rules.

use flaked_store::fetchers::attrs::Attrs;
use flaked_store::fetchers::{FlakeRef, Input, ParseOptions, Registries, Registry, RegistryType};

fn input(s: &str) -> Input {
    FlakeRef::parse(
        s,
        &ParseOptions {
            allow_missing: true,
            ..Default::default()
        },
    )
    .expect("valid ref")
    .input
}

const GLOBAL: &str = r#"{
  "flakes": [
    {
      "from": {
        "id": "nixpkgs",
        "type": "indirect"
      },
      "to": {
        "owner": "NixOS",
        "ref": "nixpkgs-unstable",
        "repo": "nixpkgs",
        "type": "github"
      }
    },
    {
      "from": {
        "id": "templates",
        "type": "indirect"
      },
      "to": {
        "dir": "sub",
        "owner": "NixOS",
        "repo": "templates",
        "type": "github"
      }
    },
    {
      "exact": true,
      "from": {
        "id": "pinned",
        "ref": "stable",
        "type": "indirect"
      },
      "to": {
        "path": "/srv/pinned",
        "type": "path"
      }
    },
    {
      "from": {
        "id": "alias",
        "type": "indirect"
      },
      "to": {
        "id": "nixpkgs",
        "type": "indirect"
      }
    }
  ],
  "version": 2
}"#;

fn registries() -> Registries {
    let global = Registry::parse(GLOBAL, "global.json", RegistryType::Global).expect("parses");
    Registries {
        registries: vec![Registry::new(RegistryType::Flag), global],
    }
}

fn resolve(s: &str) -> Result<String, String> {
    let r = FlakeRef::parse(
        s,
        &ParseOptions {
            allow_missing: true,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    registries()
        .resolve(&r, &|_| true)
        .map(|r| r.to_string())
        .map_err(|e| e.to_string())
}

#[test]
fn registry_json_round_trips() {
    let reg = Registry::parse(GLOBAL, "global.json", RegistryType::Global).expect("parses");
    assert_eq!(reg.entries.len(), 4);
    assert_eq!(reg.to_json_string(), GLOBAL);
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path().join("nix/registry.json");
    reg.write(&p).expect("writes");
    assert_eq!(std::fs::read_to_string(&p).expect("reads"), GLOBAL);
    assert_eq!(Registry::read(&p, RegistryType::User).entries, reg.entries);
    // Missing and broken files are empty registries.
    assert!(
        Registry::read(&tmp.path().join("none.json"), RegistryType::User)
            .entries
            .is_empty()
    );
    std::fs::write(&p, "{\"version\": 1}").expect("write");
    assert!(Registry::read(&p, RegistryType::User).entries.is_empty());
    assert_eq!(
        Registry::parse("{\"version\": 1}", "r.json", RegistryType::User)
            .expect_err("old")
            .to_string(),
        "flake registry 'r.json' has unsupported version 1"
    );
}

#[test]
fn resolution_rules() {
    // Prefix match: the input's ref/rev are carried over to the target.
    assert_eq!(
        resolve("nixpkgs").as_deref(),
        Ok("github:NixOS/nixpkgs/nixpkgs-unstable")
    );
    assert_eq!(
        resolve("nixpkgs/nixos-23.05").as_deref(),
        Ok("github:NixOS/nixpkgs/nixos-23.05")
    );
    assert_eq!(
        resolve("nixpkgs/a3a3dda3bacf61e8a39258a0ed9c924eeca8e293").as_deref(),
        Ok("github:NixOS/nixpkgs/a3a3dda3bacf61e8a39258a0ed9c924eeca8e293")
    );
    // Extra attributes (dir) come from the entry.
    assert_eq!(
        resolve("templates").as_deref(),
        Ok("github:NixOS/templates?dir=sub")
    );
    // Exact entries match only identical inputs.
    assert_eq!(resolve("pinned/stable").as_deref(), Ok("path:/srv/pinned"));
    assert_eq!(
        resolve("pinned"),
        Err("cannot find flake 'flake:pinned' in the flake registries".to_owned())
    );
    // Chains are followed.
    assert_eq!(
        resolve("alias/foo").as_deref(),
        Ok("github:NixOS/nixpkgs/foo")
    );
    // Direct inputs are returned unchanged.
    assert_eq!(resolve("github:a/b").as_deref(), Ok("github:a/b"));
    assert_eq!(
        resolve("unknown"),
        Err("cannot find flake 'flake:unknown' in the flake registries".to_owned())
    );
}

#[test]
fn flag_registry_overrides_and_cycles() {
    let mut regs = registries();
    regs.registries[0].add(input("nixpkgs"), input("path:/local/nixpkgs"), Attrs::new());
    let (i, _) = regs.lookup(&input("nixpkgs"), &|_| true).expect("resolves");
    assert_eq!(i.to_url_string().expect("printable"), "path:/local/nixpkgs");
    // The filter can skip registries.
    let (i, _) = regs
        .lookup(&input("nixpkgs"), &|t| t != RegistryType::Flag)
        .expect("resolves");
    assert_eq!(
        i.to_url_string().expect("printable"),
        "github:NixOS/nixpkgs/nixpkgs-unstable"
    );
    regs.registries[0].remove(&input("nixpkgs"));
    assert!(regs.registries[0].entries.is_empty());
    let mut cyc = Registries::default();
    let mut r = Registry::new(RegistryType::User);
    r.add(input("a"), input("b"), Attrs::new());
    r.add(input("b"), input("a"), Attrs::new());
    cyc.registries.push(r);
    assert_eq!(
        cyc.lookup(&input("a"), &|_| true)
            .expect_err("cycle")
            .to_string(),
        "cycle detected in flake registry for 'flake:a'"
    );
}

/// A registry file written by `nix registry add` round-trips byte for byte, and resolving
/// references through it gives Nix's `resolvedUrl` (or error) from `nix flake metadata`.
#[test]
fn registry_written_by_nix_and_resolutions_match() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flake-golden");
    let text = std::fs::read_to_string(dir.join("registry.json")).expect("registry.json");
    let reg = Registry::parse(&text, "registry.json", RegistryType::Global).expect("parses");
    assert_eq!(reg.to_json_string(), text);
    let regs = Registries {
        registries: vec![Registry::new(RegistryType::Flag), reg],
    };
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("registry-resolve.json")).expect("registry-resolve.json"),
    )
    .expect("JSON");
    let mut failures = Vec::new();
    for c in cases.as_array().expect("array") {
        let r = c["ref"].as_str().expect("ref");
        let ours = FlakeRef::parse(
            r,
            &ParseOptions {
                allow_missing: true,
                ..Default::default()
            },
        )
        .and_then(|f| regs.resolve(&f, &|_| true))
        .map(|f| f.to_string())
        .map_err(|e| e.to_string());
        let expected = match (c.get("resolvedUrl"), c.get("error")) {
            (Some(u), _) => Ok(u.as_str().unwrap_or_default().to_owned()),
            (_, Some(e)) => Err(e.as_str().unwrap_or_default().to_owned()),
            _ => panic!("bad golden entry {c}"),
        };
        if ours != expected {
            failures.push(format!("{r}: ours {ours:?}, Nix {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
