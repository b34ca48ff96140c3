//! The deployment descriptions are checked like code: every Kubernetes document parses, every
//! ConfigMap and Secret a workload reads exists with the keys it reads, probes name real ports,
//! autoscalers and disruption budgets point at real Deployments; and `docker compose config`
//! accepts the compose stack.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is missing or not a string"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

/// Every document of the base and the overlay's generated Secret keys.
struct Deploy {
    docs: Vec<Yaml>,
    config_maps: BTreeMap<String, BTreeSet<String>>,
    secrets: BTreeMap<String, BTreeSet<String>>,
}

fn deploy() -> Deploy {
    let base = root().join("deploy/base");
    let kustomization = &load(&base.join("kustomization.yaml"))[0];
    let mut docs = vec![];
    for r in list(&kustomization["resources"]) {
        for doc in load(&base.join(str_of(r, "resource"))) {
            for field in ["apiVersion", "kind"] {
                str_of(&doc[field], field);
            }
            str_of(&doc["metadata"]["name"], "metadata.name");
            docs.push(doc);
        }
    }
    let mut config_maps = BTreeMap::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
    {
        let keys = d["data"]
            .as_hash()
            .expect("ConfigMap data")
            .keys()
            .map(|k| str_of(k, "key").to_owned())
            .collect();
        config_maps.insert(str_of(&d["metadata"]["name"], "name").to_owned(), keys);
    }
    // The example overlay generates the Secret from an env file; its example lists the keys.
    let overlay = root().join("deploy/overlays/example");
    let ok = &load(&overlay.join("kustomization.yaml"))[0];
    assert_eq!(list(&ok["resources"])[0].as_str(), Some("../../base"));
    let mut secrets = BTreeMap::new();
    for generator in list(&ok["secretGenerator"]) {
        let env = str_of(&list(&generator["envs"])[0], "envs");
        let example = overlay.join(format!("{env}.example"));
        let keys = std::fs::read_to_string(&example)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split_once('=').expect("KEY=value").0.to_owned())
            .collect();
        secrets.insert(str_of(&generator["name"], "name").to_owned(), keys);
    }
    Deploy {
        docs,
        config_maps,
        secrets,
    }
}

#[test]
fn every_reference_in_the_kubernetes_manifests_resolves() {
    let d = deploy();
    let deployments: Vec<&Yaml> = d
        .docs
        .iter()
        .filter(|x| x["kind"].as_str() == Some("Deployment"))
        .collect();
    let names: BTreeSet<&str> = deployments
        .iter()
        .map(|x| str_of(&x["metadata"]["name"], "name"))
        .collect();
    assert_eq!(names, BTreeSet::from(["hepdb-gateway", "hepdb-worker"]));
    for dep in &deployments {
        let name = str_of(&dep["metadata"]["name"], "name");
        let spec = &dep["spec"]["template"]["spec"];
        for c in list(&spec["containers"]) {
            let ports: BTreeSet<&str> = list(&c["ports"])
                .iter()
                .map(|p| str_of(&p["name"], "port name"))
                .collect();
            for probe in ["readinessProbe", "livenessProbe"] {
                let port = str_of(&c[probe]["httpGet"]["port"], probe);
                assert!(
                    ports.contains(port),
                    "{name}: {probe} uses unknown port {port}"
                );
            }
            assert!(
                !c["resources"]["requests"].is_badvalue(),
                "{name}: resource requests"
            );
            for from in list(&c["envFrom"]) {
                if let Some(cm) = from["configMapRef"]["name"].as_str() {
                    assert!(d.config_maps.contains_key(cm), "{name}: ConfigMap {cm}");
                }
                if let Some(s) = from["secretRef"]["name"].as_str() {
                    assert!(d.secrets.contains_key(s), "{name}: Secret {s}");
                }
            }
            for env in list(&c["env"]) {
                let from = &env["valueFrom"];
                for (kind, map) in [
                    ("configMapKeyRef", &d.config_maps),
                    ("secretKeyRef", &d.secrets),
                ] {
                    if let (Some(n), Some(k)) =
                        (from[kind]["name"].as_str(), from[kind]["key"].as_str())
                    {
                        assert!(
                            map.get(n).is_some_and(|keys| keys.contains(k)),
                            "{name}: {kind} {n}/{k}"
                        );
                    }
                }
            }
        }
        // Each Deployment scales on its own (the gateway on CPU, the worker with KEDA on its
        // queue) and keeps one pod through a voluntary disruption.
        let scaler = if name == "hepdb-worker" {
            "ScaledObject"
        } else {
            "HorizontalPodAutoscaler"
        };
        for kind in [scaler, "PodDisruptionBudget"] {
            assert!(
                d.docs.iter().any(|x| x["kind"].as_str() == Some(kind)
                    && (x["spec"]["scaleTargetRef"]["name"].as_str() == Some(name)
                        || x["spec"]["selector"]["matchLabels"]["app"].as_str() == Some(name))),
                "{name} has no {kind}"
            );
        }
    }
    assert!(
        d.docs
            .iter()
            .any(|x| x["kind"].as_str() == Some("RabbitmqCluster")),
        "RabbitMQ comes from the cluster operator"
    );

    // Every secret setting is in a Secret; the engines' admin URLs are in one that only the
    // worker mounts, so the internet-facing gateway never holds an engine credential.
    let config = &d.config_maps["hepdb-config"];
    let secret = &d.secrets["hepdb-secrets"];
    let engine_secret = &d.secrets["hepdb-engine-secrets"];
    for key in [
        "HEPDB__CRYPTO__MASTER_KEY",
        "HEPDB__METADATA__URL",
        "HEPDB__AMQP__URL",
    ] {
        assert!(secret.contains(key), "Secret lacks {key}");
        assert!(!config.contains(key), "{key} must not be in the ConfigMap");
    }
    for engine in ["MARIADB", "POSTGRES", "MONGO"] {
        let key = format!("HEPDB__ENGINES__{engine}__ADMIN_URL");
        assert!(
            !secret.contains(&key),
            "{key} must not be in the gateway's Secret"
        );
        assert!(!config.contains(&key), "{key} must not be in the ConfigMap");
        if config.contains(&format!("HEPDB__ENGINES__{engine}__ENABLED")) {
            assert!(
                engine_secret.contains(&key),
                "hepdb-engine-secrets lacks {key}"
            );
        }
    }
    let mounts = |deployment: &str| -> BTreeSet<String> {
        let dep = deployments
            .iter()
            .find(|x| x["metadata"]["name"].as_str() == Some(deployment))
            .unwrap();
        list(&dep["spec"]["template"]["spec"]["containers"])
            .iter()
            .flat_map(|c| list(&c["envFrom"]))
            .filter_map(|f| f["secretRef"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(mounts("hepdb-worker").contains("hepdb-engine-secrets"));
    assert!(!mounts("hepdb-gateway").contains("hepdb-engine-secrets"));
}

/// A compose service's environment, with `<<` merge keys resolved.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    fn add(into: &mut BTreeMap<String, String>, map: &Yaml) {
        for (k, v) in map.as_hash().expect("environment map") {
            match k.as_str() {
                Some("<<") => match v {
                    Yaml::Array(maps) => maps.iter().for_each(|m| add(into, m)),
                    m => add(into, m),
                },
                Some(key) => {
                    into.insert(key.to_owned(), str_of(v, key).to_owned());
                }
                None => panic!("environment key is not a string"),
            }
        }
    }
    let mut env = BTreeMap::new();
    add(&mut env, &service["environment"]);
    env
}

#[test]
fn only_the_worker_and_setup_get_engine_credentials_in_compose() {
    let compose = &load(&root().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    let gateway = environment(&services["gateway"]);
    assert!(
        !gateway.keys().any(|k| k.ends_with("__ADMIN_URL")),
        "the gateway gets an engine credential"
    );
    for app in ["worker", "setup"] {
        let env = environment(&services[app]);
        for engine in ["MARIADB", "POSTGRES", "MONGO"] {
            let key = format!("HEPDB__ENGINES__{engine}__ADMIN_URL");
            assert!(env.contains_key(&key), "{app} lacks {key}");
        }
    }
}

#[test]
fn the_compose_stack_validates() {
    let file = root().join("docker-compose.yml");
    // The Compose plugin, or Debian's docker-compose (installed by .ci/services.sh).
    let attempts: [(&str, &[&str]); 2] = [("docker", &["compose"]), ("docker-compose", &[])];
    for (program, prefix) in attempts {
        let out = Command::new(program)
            .args(prefix)
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"])
            .output();
        match out {
            Ok(o) if o.status.success() => return,
            Ok(o) if program == "docker-compose" => {
                panic!(
                    "docker-compose.yml is invalid: {}",
                    String::from_utf8_lossy(&o.stderr)
                )
            }
            _ => {}
        }
    }
    panic!(
        "neither `docker compose` nor `docker-compose` is installed (.ci/services.sh installs it)"
    );
}

#[test]
fn the_compose_stack_sends_traces_to_its_collector() {
    // yaml-rust2 resolves the `x-hepdb-env` anchor that gateway and worker share.
    let compose = &load(&root().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    for app in ["gateway", "worker"] {
        let env = environment(&services[app]);
        let endpoint = env
            .get("HEPDB__TELEMETRY__OTLP_ENDPOINT")
            .expect("the OTLP endpoint");
        let (host, port) = endpoint
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once(':'))
            .unwrap_or_else(|| panic!("{app}: {endpoint} is not http://host:port"));
        let image = str_of(&services[host]["image"], "the collector's image");
        assert!(
            image.contains("jaeger") || image.contains("opentelemetry-collector"),
            "{app}: {host} ({image}) is not an OTLP collector"
        );
        assert_eq!(port, "4318", "{app}: OTLP/HTTP is port 4318");
        let depends = &services[app]["depends_on"][host];
        assert!(!depends.is_badvalue(), "{app} starts before {host}");
    }
}

/// Every pod hepdb runs (Deployments and the migration Job) passes Pod Security "restricted":
/// non-root, RuntimeDefault seccomp, no privilege escalation, every capability dropped, and a
/// read-only root filesystem.
#[test]
fn every_pod_passes_pod_security_restricted() {
    let d = deploy();
    let pods: Vec<(&str, &Yaml)> = d
        .docs
        .iter()
        .filter(|x| matches!(x["kind"].as_str(), Some("Deployment" | "Job")))
        .map(|x| {
            (
                str_of(&x["metadata"]["name"], "name"),
                &x["spec"]["template"]["spec"],
            )
        })
        .collect();
    let names: BTreeSet<&str> = pods.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        BTreeSet::from(["hepdb-gateway", "hepdb-worker", "hepdb-migrate"])
    );
    for (name, spec) in pods {
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true), "{name}");
        assert!(pod["runAsUser"].as_i64().is_some_and(|u| u > 0), "{name}");
        assert_eq!(
            pod["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{name}"
        );
        assert!(
            spec["hostNetwork"].is_badvalue() && spec["volumes"].is_badvalue(),
            "{name}"
        );
        for c in list(&spec["containers"])
            .iter()
            .chain(list(&spec["initContainers"]))
        {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{name}"
            );
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
            assert_eq!(
                list(&sc["capabilities"]["drop"])
                    .iter()
                    .filter_map(Yaml::as_str)
                    .collect::<Vec<_>>(),
                ["ALL"],
                "{name}"
            );
            assert!(sc["capabilities"]["add"].is_badvalue(), "{name}");
            assert!(sc["privileged"].as_bool() != Some(true), "{name}");
        }
    }
}

/// Compose starts hepdb only on servers that answer over TCP, and restarts and health-checks
/// gateway and worker.
#[test]
fn compose_healthchecks_test_tcp_and_hepdb_restarts() {
    let compose = &load(&root().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    for db in ["metadata", "postgres-engine"] {
        let test: Vec<&str> = list(&services[db]["healthcheck"]["test"])
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(
            test.windows(2).any(|w| w == ["-h", "127.0.0.1"]),
            "{db}: the healthcheck must connect over TCP: {test:?}"
        );
    }
    // The broker's check connects to its AMQP listeners, not only to the node's runtime.
    let broker: Vec<&str> = list(&services["rabbitmq"]["healthcheck"]["test"])
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(broker.contains(&"check_port_connectivity"), "{broker:?}");
    for app in ["gateway", "worker"] {
        let service = &services[app];
        assert_eq!(service["restart"].as_str(), Some("unless-stopped"), "{app}");
        let test = list(&service["healthcheck"]["test"]);
        assert!(
            test.iter()
                .any(|t| t.as_str().is_some_and(|t| t.contains("/healthz"))),
            "{app} has no healthcheck on /healthz"
        );
    }
}

/// The image builds its dependencies in a layer of their own, from the lockfile as it is, and
/// runs as a non-root user.
#[test]
fn the_image_caches_dependencies_builds_locked_and_runs_unprivileged() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("the Dockerfile has no `{needle}`"))
    };
    let cook = at("cargo chef cook");
    assert!(lines[cook].contains("--locked"));
    let build = at("cargo build --release");
    assert!(lines[build].contains("--locked"));
    // The cook runs before the sources arrive: its layer survives any edit to them.
    let sources = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("COPY . ."))
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    assert!(
        sources.iter().any(|&i| i > cook && i < build),
        "{sources:?}"
    );
    let user = lines.iter().rev().find(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
}

/// The example overlay renders with `kubectl kustomize` (with its Secrets' example env files),
/// and every object validates against the Kubernetes schemas, strictly (an unknown field is an
/// error). Objects of operators' CRDs (RabbitMQ, KEDA, Prometheus) have no schema there; the
/// other tests here check what hepdb relies on in them.
#[test]
fn the_rendered_manifests_validate_against_the_kubernetes_schemas() {
    let work = std::env::temp_dir().join(format!("hepdb-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    copy_dir(&root().join("deploy"), &work.join("deploy"));
    let overlay = work.join("deploy/overlays/example");
    for entry in std::fs::read_dir(&overlay).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(env) = name.strip_suffix(".example") {
            std::fs::copy(&path, overlay.join(env)).unwrap();
        }
    }
    let rendered = Command::new("kubectl")
        .args(["kustomize"])
        .arg(&overlay)
        .output()
        .expect("kubectl (.ci/services.sh installs it)");
    assert!(
        rendered.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let file = work.join("rendered.yaml");
    std::fs::write(&file, &rendered.stdout).unwrap();
    let text = String::from_utf8(rendered.stdout).unwrap();
    for kind in [
        "Deployment",
        "Job",
        "NetworkPolicy",
        "ScaledObject",
        "ServiceMonitor",
        "Ingress",
    ] {
        assert!(
            text.contains(&format!("kind: {kind}\n")),
            "no {kind} rendered"
        );
    }
    // The overlay's managed metadata database, added to the gateway's and the migration's
    // PostgreSQL rule.
    assert_eq!(text.matches("cidr: 10.20.0.5/32").count(), 2, "{text}");
    let venv = std::env::var("HEPDB_KUBE_VALIDATE_VENV")
        .unwrap_or_else(|_| "/var/tmp/hepdb-kube-validate".into());
    let validated = Command::new(format!("{venv}/bin/kubernetes-validate"))
        .args(["--strict", "--quiet", "--no-warn"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate (.ci/services.sh installs it)");
    assert!(
        validated.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    std::fs::remove_dir_all(&work).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The NetworkPolicies: the public port from the ingress controller only, the platform port
/// from inside the cluster only, metrics from monitoring only; the gateway never reaches an
/// engine port, the worker does. KEDA scales the worker on the jobs queue, and the Ingress
/// routes only the public API, over TLS.
#[test]
fn network_policies_autoscaling_and_ingress_say_what_the_design_says() {
    let d = deploy();
    let policy = |name: &str| {
        d.docs
            .iter()
            .find(|x| {
                x["kind"].as_str() == Some("NetworkPolicy")
                    && x["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
    };
    let from_for_port = |p: &Yaml, port: &str| -> Vec<String> {
        list(&p["spec"]["ingress"])
            .iter()
            .filter(|rule| {
                list(&rule["ports"])
                    .iter()
                    .any(|x| x["port"].as_str() == Some(port))
            })
            .flat_map(|rule| list(&rule["from"]).iter())
            .map(|from| {
                from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    .as_str()
                    .unwrap_or("any namespace")
                    .to_owned()
            })
            .collect()
    };
    let egress_ports = |p: &Yaml| -> BTreeSet<i64> {
        list(&p["spec"]["egress"])
            .iter()
            .flat_map(|rule| list(&rule["ports"]).iter())
            .filter_map(|x| x["port"].as_i64())
            .collect()
    };
    // The peers a policy lets reach `port`: None for a rule open to any destination.
    let to_for_port = |p: &Yaml, port: i64| -> Vec<Option<String>> {
        list(&p["spec"]["egress"])
            .iter()
            .filter(|rule| {
                list(&rule["ports"])
                    .iter()
                    .any(|x| x["port"].as_i64() == Some(port))
            })
            .flat_map(|rule| match rule["to"].as_vec() {
                None => vec![None],
                Some(peers) => peers
                    .iter()
                    .map(|peer| {
                        let labels = &peer["podSelector"]["matchLabels"];
                        let label = ["hepdb.io/metadata", "app.kubernetes.io/name"]
                            .into_iter()
                            .find_map(|l| labels[l].as_str().map(|v| format!("{l}={v}")));
                        Some(label.unwrap_or_else(|| "ipBlock".into()))
                    })
                    .collect(),
            })
            .collect()
    };
    let metadata = [Some("hepdb.io/metadata=true".to_owned())];
    let broker = [Some("app.kubernetes.io/name=hepdb-rabbitmq".to_owned())];
    let gateway = policy("hepdb-gateway");
    // PostgreSQL only at the metadata database: never an engine's.
    assert_eq!(to_for_port(gateway, 5432), metadata);
    assert_eq!(to_for_port(policy("hepdb-migrate"), 5432), metadata);
    for port in [5672, 5671] {
        assert_eq!(to_for_port(gateway, port), broker);
        assert_eq!(to_for_port(policy("hepdb-worker"), port), broker);
    }
    assert_eq!(from_for_port(gateway, "http"), ["ingress-nginx"]);
    assert_eq!(from_for_port(gateway, "platform"), ["any namespace"]);
    assert_eq!(from_for_port(gateway, "metrics"), ["monitoring"]);
    let engines = [3306, 27017];
    assert!(engines.iter().all(|p| !egress_ports(gateway).contains(p)));
    let worker = policy("hepdb-worker");
    assert_eq!(from_for_port(worker, "admin"), ["monitoring"]);
    assert!(engines.iter().all(|p| egress_ports(worker).contains(p)));
    assert!(egress_ports(worker).contains(&5432));

    let scaled = d
        .docs
        .iter()
        .find(|x| x["kind"].as_str() == Some("ScaledObject"))
        .expect("a KEDA ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("hepdb-worker")
    );
    let trigger = &list(&scaled["spec"]["triggers"])[0];
    assert_eq!(trigger["type"].as_str(), Some("rabbitmq"));
    let config = d
        .docs
        .iter()
        .find(|x| x["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let prefix = str_of(
        &config["data"]["HEPDB__AMQP__QUEUE_PREFIX"],
        "the queue prefix",
    );
    assert_eq!(
        trigger["metadata"]["queueName"].as_str(),
        Some(format!("{prefix}.jobs").as_str())
    );
    assert!(
        !d.docs.iter().any(|x| {
            x["kind"].as_str() == Some("HorizontalPodAutoscaler")
                && x["spec"]["scaleTargetRef"]["name"].as_str() == Some("hepdb-worker")
        }),
        "KEDA owns the worker's autoscaler"
    );

    let ingress = &load(&root().join("deploy/overlays/example/ingress.yaml"))[0];
    assert!(
        !list(&ingress["spec"]["tls"]).is_empty(),
        "the Ingress has TLS"
    );
    for rule in list(&ingress["spec"]["rules"]) {
        for path in list(&rule["http"]["paths"]) {
            assert_eq!(
                path["backend"]["service"]["name"].as_str(),
                Some("hepdb-gateway"),
                "only the public API is routed"
            );
        }
    }
}
