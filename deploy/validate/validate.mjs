// Renders deploy/kubernetes (Helm) and reads deploy/istio, then checks every
// object: against its kind's schema (Kubernetes, Istio, Gateway API,
// cert-manager: kubernetes-models), with unknown fields refused; a kind with no
// schema fails. Then what no schema knows: the control plane's config passes
// `switchyard validate` with the files the pod mounts, the gateway bootstrap and
// the in-mesh EnvoyFilter pass `envoy --mode validate` (the in-mesh filter
// config through the real filter when it is built), images are pinned,
// containers run unprivileged, and references between objects resolve.
// Last, broken manifests must be refused (the checker checks itself).
//
//   node deploy/validate/validate.mjs        (make validate-deploy)
//   SWITCHYARD_BIN, ENVOY_BIN                override the binaries used
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import YAML from "yaml";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const HELM = path.join(ROOT, "deploy/validate/node_modules/.bin/helm");
const CHART = path.join(ROOT, "deploy/kubernetes/switchyard");
const SWITCHYARD = process.env.SWITCHYARD_BIN || path.join(ROOT, "target/debug/switchyard");
const ENVOY = process.env.ENVOY_BIN || path.join(ROOT, ".venv/bin/envoy");
const WASM = path.join(ROOT, "target/wasm32-wasip1/wasm-release/switchyard_filter.wasm");
const NAMESPACE = "switchyard";
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "sy-validate-"));

// Both sides of every toggle: the default, and everything switched the other way
// (`delivery`: the filter.delivery each sets, what the checks expect).
const VARIANTS = [
  { name: "default", delivery: "image", set: [] },
  {
    name: "minimal", delivery: "remote",
    set: ["tls.enabled=false", "gateway.autoscaling.enabled=false", "httpRoute.enabled=false",
      "networkPolicy.enabled=false", "filter.delivery=remote", "images.envoy.digest=sha256:" + "0".repeat(64),
      "gateway.metrics.port=9100", "gateway.metrics.annotations=false"],
  },
  // The control plane of in-mesh gateways (deploy/istio/in-mesh).
  { name: "istio gateways", delivery: "image", set: ["istio.gatewayNamespace=istio-system"], istio: "istio-system" },
];
// The default render's config, laid out with placeholder key files (for
// `switchyard filter-config`, which the in-mesh filter configs must match).
let chartConfig;
// Secrets the chart names but leaves to the operator (values.yaml says so).
const EXTERNAL_SECRETS = ["switchyard-provider-keys", "switchyard-admin-token"];

let passed = 0;
const failures = [];
const check = (what, ok, detail = "") => {
  if (ok) passed++;
  else failures.push(detail ? `${what}: ${detail}` : what);
  return ok;
};

// --- schemas -----------------------------------------------------------------

// The model class of apiVersion/kind, or null: only a resource class whose own
// apiVersion and kind are these counts (not a sub-type of the same name).
async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = group === ""
    ? [`kubernetes-models/${version}/${kind}`]
    : [`kubernetes-models/${group}/${version}/${kind}`, `@kubernetes-models/istio/${group}/${version}/${kind}`,
      `@kubernetes-models/gateway-api/${group}/${version}/${kind}`,
      `@kubernetes-models/cert-manager/${group}/${version}/${kind}`];
  for (const spec of candidates) {
    let mod;
    try { mod = await import(spec); } catch { continue; }
    const cls = mod[kind];
    if (cls && cls.apiVersion === apiVersion && cls.kind === kind) return cls;
  }
  return null;
}

// Runs the schema's validator on `data` through proxies that record which
// properties it looked at: in an object whose properties it read, a key it
// never read is not in the schema. Objects it enumerated (maps) or never
// looked into (free-form, e.g. an EnvoyFilter patch value) are left alone.
function validateStrict(cls, data) {
  const records = [];
  const proxies = new Map();
  const wrap = (value, at) => {
    if (value === null || typeof value !== "object") return value;
    if (proxies.has(value)) return proxies.get(value);
    const rec = { obj: value, at, read: new Set(), enumerated: false };
    records.push(rec);
    const note = (k) => { if (typeof k === "string") rec.read.add(k); };
    const proxy = new Proxy(value, {
      get(t, k, r) {
        note(k);
        const v = Reflect.get(t, k, r);
        return typeof k === "string" && Object.hasOwn(t, k) ? wrap(v, `${at}/${k}`) : v;
      },
      has(t, k) { note(k); return Reflect.has(t, k); },
      getOwnPropertyDescriptor(t, k) { note(k); return Reflect.getOwnPropertyDescriptor(t, k); },
      ownKeys(t) { rec.enumerated = true; return Reflect.ownKeys(t); },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  const problems = [];
  try {
    cls.prototype.validate.call(wrap(data, ""));
  } catch (e) {
    problems.push(e.message);
  }
  for (const rec of records) {
    if (Array.isArray(rec.obj) || rec.enumerated || rec.read.size === 0) continue;
    for (const k of Object.keys(rec.obj)) if (!rec.read.has(k)) problems.push(`${rec.at}/${k}: unknown field`);
  }
  return problems;
}

async function validateObject(obj, where) {
  const id = `${where}: ${obj?.kind}/${obj?.metadata?.name}`;
  if (!obj?.apiVersion || !obj?.kind) return check(id, false, "no apiVersion/kind");
  const cls = await modelFor(obj.apiVersion, obj.kind);
  if (!check(id, !!cls, `no schema for ${obj.apiVersion} ${obj.kind}`)) return false;
  const problems = validateStrict(cls, obj);
  return check(id, problems.length === 0, problems.join("; "));
}

// --- rendering -----------------------------------------------------------------

function readDocs(text, where) {
  return YAML.parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(`${where}: ${d.errors[0].message}`);
    return d.toJS({ maxAliasCount: 100 });
  }).filter((o) => o !== null);
}

function render(variant) {
  const args = ["template", "sy", CHART, "--namespace", NAMESPACE];
  for (const s of variant.set) args.push("--set", s);
  return readDocs(execFileSync(HELM, args, { encoding: "utf8" }), `helm template (${variant.name})`);
}

function run(bin, args) {
  const r = spawnSync(bin, args, { encoding: "utf8" });
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? r.error.message : ""}`.trim() };
}

// --- project invariants ------------------------------------------------------

const byKind = (objs, kind) => objs.filter((o) => o.kind === kind);
const named = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const containersOf = (pod) => [...(pod.initContainers ?? []), ...pod.containers];
const lastLine = (s) => s.split("\n").filter(Boolean).slice(-3).join(" | ");

function pinned(image) {
  if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
  const tag = image.split("/").pop().split(":")[1];
  return !!tag && tag !== "latest";
}

function checkPods(objs, v) {
  for (const d of byKind(objs, "Deployment")) {
    const pod = d.spec.template.spec;
    const id = `${v}: Deployment/${d.metadata.name}`;
    check(`${id} runs as non-root`, pod.securityContext?.runAsNonRoot === true);
    for (const c of containersOf(pod)) {
      const sc = c.securityContext ?? {};
      check(`${id} ${c.name}: image pinned`, pinned(c.image), c.image);
      check(`${id} ${c.name}: unprivileged, read-only root`, sc.allowPrivilegeEscalation === false &&
        sc.readOnlyRootFilesystem === true && (sc.capabilities?.drop ?? []).includes("ALL"));
      check(`${id} ${c.name}: requests and limits`, !!(c.resources?.requests && c.resources?.limits));
      for (const m of c.volumeMounts ?? []) {
        check(`${id} ${c.name}: mount ${m.name} has a volume`, (pod.volumes ?? []).some((vol) => vol.name === m.name));
      }
    }
    for (const vol of pod.volumes ?? []) {
      if (vol.configMap) check(`${id}: ConfigMap ${vol.configMap.name} rendered`, !!named(objs, "ConfigMap", vol.configMap.name));
      if (vol.persistentVolumeClaim) {
        check(`${id}: PVC ${vol.persistentVolumeClaim.claimName} rendered`,
          !!named(objs, "PersistentVolumeClaim", vol.persistentVolumeClaim.claimName));
      }
      if (vol.secret) {
        const name = vol.secret.secretName;
        const issued = byKind(objs, "Certificate").some((c) => c.spec.secretName === name);
        check(`${id}: Secret ${name} issued by a Certificate or left to the operator`,
          issued || EXTERNAL_SECRETS.includes(name));
      }
    }
  }
  for (const s of byKind(objs, "Service")) {
    const target = byKind(objs, "Deployment").find((d) =>
      Object.entries(s.spec.selector).every(([k, val]) => d.spec.template.metadata.labels[k] === val));
    if (!check(`${v}: Service/${s.metadata.name} selects a Deployment`, !!target)) continue;
    const ports = target.spec.template.spec.containers.flatMap((c) => c.ports ?? []);
    for (const p of s.spec.ports) {
      check(`${v}: Service/${s.metadata.name} port ${p.name} targets a container port`,
        ports.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort));
    }
  }
  for (const o of [...byKind(objs, "PodDisruptionBudget"), ...byKind(objs, "NetworkPolicy")]) {
    const sel = o.spec.selector?.matchLabels ?? o.spec.podSelector?.matchLabels;
    check(`${v}: ${o.kind}/${o.metadata.name} selects pods`, byKind(objs, "Deployment").some((d) =>
      Object.entries(sel).every(([k, val]) => d.spec.template.metadata.labels[k] === val)));
  }
  // The gateways reach the control plane's xDS and status ports (fleet exchange,
  // served filter) through its NetworkPolicy.
  for (const np of byKind(objs, "NetworkPolicy").filter((o) => o.metadata.name.endsWith("-control-plane"))) {
    const cpSvc = byKind(objs, "Service").find((s) => s.metadata.name === np.metadata.name);
    const gwLabels = byKind(objs, "Deployment").find((d) => d.metadata.name.endsWith("-gateway"))?.spec.template.metadata.labels ?? {};
    const open = np.spec.ingress.filter((r) => (r.from ?? []).some((f) => f.podSelector &&
      Object.entries(f.podSelector.matchLabels ?? {}).every(([k, val]) => gwLabels[k] === val))).flatMap((r) => r.ports ?? []);
    for (const name of ["grpc-xds", "http-status"]) {
      const port = cpSvc?.spec.ports.find((p) => p.name === name)?.port;
      check(`${v}: NetworkPolicy/${np.metadata.name} lets the gateways reach ${name}`, open.some((p) => p.port === port), String(port));
    }
  }
  for (const h of byKind(objs, "HorizontalPodAutoscaler")) {
    const d = named(objs, "Deployment", h.spec.scaleTargetRef.name);
    check(`${v}: HPA targets a Deployment without fixed replicas`, !!d && d.spec.replicas === undefined);
  }
  for (const r of byKind(objs, "HTTPRoute")) {
    for (const b of r.spec.rules.flatMap((rule) => rule.backendRefs ?? [])) {
      const s = named(objs, "Service", b.name);
      check(`${v}: HTTPRoute backend ${b.name}:${b.port} is a Service port`, !!s && s.spec.ports.some((p) => p.port === b.port));
    }
  }
}

// The control plane's config, validated by the real binary inside a copy of the
// files its container mounts: every file it names must lie under a mount. With
// filter.delivery remote it serves the Wasm build (`filter: { wasm, serve: true }`):
// a file an init container copies from the filter image into a read-only volume
// (the binary reads it: here the built filter, or a stand-in).
function checkControlPlaneConfig(objs, v, delivery) {
  const cp = byKind(objs, "Deployment").find((d) => d.metadata.name.endsWith("-control-plane"));
  const pod = cp.spec.template.spec;
  const c = pod.containers[0];
  const cpService = byKind(objs, "Service").find((s) => s.metadata.name.endsWith("-control-plane"));
  const advertised = c.args[c.args.indexOf("--advertise-addr") + 1] ?? "";
  const statusPort = cpService.spec.ports.find((p) => p.name === "http-status")?.port;
  check(`${v}: the control plane advertises its Service's status port (fleet cluster, served filter URL)`,
    c.args.includes("--advertise-addr") &&
    advertised === `${cpService.metadata.name}.${NAMESPACE}.svc.cluster.local:${statusPort}`, advertised);
  const configPath = c.args[c.args.indexOf("--config") + 1];
  const configVolume = c.volumeMounts.find((m) => configPath.startsWith(m.mountPath + "/"));
  const cmName = cp.spec.template.spec.volumes.find((vol) => vol.name === configVolume.name).configMap.name;
  const text = named(objs, "ConfigMap", cmName).data[path.basename(configPath)];
  const config = YAML.parse(text);
  const fsRoot = path.join(TMP, v, "cp");
  const local = (p) => path.join(fsRoot, p);
  fs.mkdirSync(path.dirname(local(configPath)), { recursive: true });
  const files = [];
  const collect = (o) => {
    if (Array.isArray(o)) o.forEach(collect);
    else if (o && typeof o === "object") {
      for (const [k, val] of Object.entries(o)) {
        if (k === "file" && typeof val === "string") files.push(val);
        else collect(val);
      }
    }
  };
  collect(config.providers);
  collect(config.governance);
  let rewritten = text;
  for (const f of files) {
    const abs = path.posix.resolve(path.posix.dirname(configPath), f);
    const mounted = c.volumeMounts.some((m) => abs.startsWith(m.mountPath + "/"));
    check(`${v}: config file ${f} is in a mounted volume`, mounted, abs);
    fs.mkdirSync(path.dirname(local(abs)), { recursive: true });
    fs.writeFileSync(local(abs), "placeholder-secret\n");
    if (path.posix.isAbsolute(f)) rewritten = rewritten.replaceAll(f, local(abs));
  }
  const filter = config.filter ?? {};
  const init = pod.initContainers ?? [];
  check(`${v}: config filter.serve is ${delivery === "remote"} (filter.delivery ${delivery})`,
    (filter.serve === true) === (delivery === "remote"), JSON.stringify(filter));
  if (delivery === "remote") {
    check(`${v}: remote delivery serves the Wasm build, not the native module`,
      typeof filter.wasm === "string" && filter.module === undefined, JSON.stringify(filter));
    const wasm = path.posix.resolve(path.posix.dirname(configPath), String(filter.wasm));
    const mount = c.volumeMounts.find((m) => wasm.startsWith(m.mountPath + "/"));
    const vol = mount && pod.volumes.find((vol) => vol.name === mount.name);
    check(`${v}: the served filter file is in a read-only emptyDir of the control plane`,
      !!mount && mount.readOnly === true && !!vol?.emptyDir, wasm);
    const filler = mount && init.find((ic) => (ic.volumeMounts ?? []).some((m) => m.name === mount.name));
    const cmd = filler?.command ?? [];
    check(`${v}: an init container copies the served filter file from the filter image into it`,
      !!filler && filler.volumeMounts.find((m) => m.name === mount.name).mountPath === mount.mountPath &&
      cmd.includes("/switchyard/filter/" + path.posix.basename(wasm)) && cmd.at(-1).replace(/\/$/, "") === mount.mountPath,
      cmd.join(" "));
    fs.mkdirSync(path.dirname(local(wasm)), { recursive: true });
    if (fs.existsSync(WASM)) fs.copyFileSync(WASM, local(wasm));
    else fs.writeFileSync(local(wasm), Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]));
    rewritten = rewritten.replaceAll(String(filter.wasm), local(wasm));
  } else {
    check(`${v}: the control plane has no filter init container or volume (image delivery)`,
      init.length === 0 && !pod.volumes.some((vol) => vol.name === "filter"));
  }
  fs.writeFileSync(local(configPath), rewritten);
  if (v === "default") chartConfig = local(configPath);
  const r = run(SWITCHYARD, ["validate", local(configPath)]);
  check(`${v}: switchyard validate on the ConfigMap's config`, r.ok, r.out);
  return config;
}

function selfSignedCert(dir) {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-days", "1", "-subj", "/CN=validate", "-keyout", path.join(dir, "tls.key"), "-out", path.join(dir, "tls.crt")],
  { stdio: "ignore" });
  fs.copyFileSync(path.join(dir, "tls.crt"), path.join(dir, "ca.crt"));
}

const memBytes = (q) => {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(String(q));
  return m ? Number(m[1]) * { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, undefined: 1 }[m[2]] : NaN;
};

function checkGateway(objs, v, config, delivery) {
  const gw = byKind(objs, "Deployment").find((d) => d.metadata.name.endsWith("-gateway"));
  const pod = gw.spec.template.spec;
  const envoy = pod.containers[0];
  const cpService = byKind(objs, "Service").find((s) => s.metadata.name.endsWith("-control-plane"));
  const env = Object.fromEntries((envoy.env ?? []).filter((e) => "value" in e).map((e) => [e.name, e.value]));

  // The listener the control plane sends is the port the Service reaches.
  check(`${v}: config listener.port is the gateway's container port`,
    envoy.ports.some((p) => p.containerPort === config.listener?.port), `listener.port ${config.listener?.port}`);

  // Where the filter comes from: image, a file the init container copies into
  // the pod; remote, fetched from the control plane (checkControlPlaneConfig).
  const filterPath = config.filter?.wasm ?? config.filter?.module;
  const filterMount = envoy.volumeMounts.find((m) => m.name === "filter");
  if (delivery === "image") {
    check(`${v}: config filter path is in the gateway's filter volume`,
      !!filterMount && typeof filterPath === "string" && filterPath.startsWith(filterMount.mountPath + "/"), filterPath);
    const cp = pod.initContainers?.[0]?.command ?? [];
    check(`${v}: the init container copies the config's filter file`,
      cp.some((a) => a.endsWith("/" + path.basename(filterPath))) && cp.at(-1)?.replace(/\/$/, "") === filterMount?.mountPath);
  } else {
    check(`${v}: remote filter delivery: no init container or filter volume on the gateways`,
      !filterMount && !(pod.initContainers ?? []).length && !pod.volumes.some((vol) => vol.name === "filter"));
  }

  // The bootstrap: valid for Envoy 1.40, pointing at the control plane.
  const bootstrapText = named(objs, "ConfigMap", pod.volumes.find((vol) => vol.name === "bootstrap").configMap.name).data["bootstrap.yaml"];
  const bootstrap = YAML.parse(bootstrapText);
  const xds = bootstrap.static_resources.clusters.find((c) => c.name === "switchyard_xds");
  const sock = xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
  const host = `${cpService.metadata.name}.${NAMESPACE}.svc.cluster.local`;
  check(`${v}: bootstrap dials the control-plane Service's xDS port`, sock.address === host &&
    cpService.spec.ports.some((p) => p.name === "grpc-xds" && p.port === sock.port_value), `${sock.address}:${sock.port_value}`);
  check(`${v}: bootstrap admin stays on loopback`, bootstrap.admin.address.socket_address.address === "127.0.0.1" &&
    String(bootstrap.admin.address.socket_address.port_value) === env.ADMIN_PORT);
  const tlsOn = pod.volumes.some((vol) => vol.name === "tls");
  check(`${v}: bootstrap uses mTLS exactly when certificates are mounted`, !!xds.transport_socket === tlsOn);
  checkStatsListener(v, gw, bootstrap);
  const heap = bootstrap.overload_manager.resource_monitors
    .find((m) => m.name === "envoy.resource_monitors.fixed_heap").typed_config.max_heap_size_bytes;
  check(`${v}: Envoy's heap limit is below the container's memory limit`, heap < memBytes(envoy.resources.limits.memory),
    `${heap} vs ${envoy.resources.limits.memory}`);
  const grace = pod.terminationGracePeriodSeconds;
  check(`${v}: grace period covers the drain and the wait for streams`,
    grace > Number(env.DRAIN_TIME_S) + Number(env.DRAIN_WAIT_S), `${grace}`);
  const dir = path.join(TMP, v, "gw");
  selfSignedCert(path.join(dir, "tls"));
  // The ConfigMap's files (bootstrap, file-based SDS) as mounted at /etc/envoy,
  // the gateway Secret's at /etc/switchyard/tls.
  const local = (text) => text.replaceAll("/etc/switchyard/tls", path.join(dir, "tls")).replaceAll("/etc/envoy", dir);
  const cmData = named(objs, "ConfigMap", pod.volumes.find((vol) => vol.name === "bootstrap").configMap.name).data;
  const sdsFiles = Object.keys(cmData).filter((k) => k.endsWith(".sds.yaml"));
  check(`${v}: the SDS files the bootstrap reads are in its ConfigMap`,
    [...bootstrapText.matchAll(/path: "\/etc\/envoy\/([^"]+)"/g)].every((m) => sdsFiles.includes(m[1])) &&
    (sdsFiles.length > 0) === tlsOn, sdsFiles.join(", "));
  for (const f of sdsFiles) fs.writeFileSync(path.join(dir, f), local(cmData[f]));
  const file = path.join(dir, "bootstrap.yaml");
  fs.writeFileSync(file, local(bootstrapText));
  const r = run(ENVOY, ["--mode", "validate", "-c", file, "--log-level", "error"]);
  check(`${v}: envoy --mode validate on the gateway bootstrap`, r.ok, lastLine(r.out));
}

// Prometheus' port: the bootstrap's one static listener serves the admin's
// /stats/prometheus and nothing else, on the container port `http-envoy-prom`
// (and the prometheus.io annotations' port, when the chart writes them); no
// traffic_direction, so the preStop's drain of the inbound listeners leaves it.
function checkStatsListener(v, gw, bootstrap) {
  const pod = gw.spec.template.spec;
  const env = Object.fromEntries((pod.containers[0].env ?? []).filter((e) => "value" in e).map((e) => [e.name, e.value]));
  const listeners = bootstrap.static_resources.listeners ?? [];
  const l = listeners[0];
  if (!check(`${v}: bootstrap has one static listener, the stats listener`,
    listeners.length === 1 && l.name === "switchyard_prometheus", listeners.map((x) => x.name).join(","))) return;
  const port = pod.containers[0].ports.find((p) => p.name === "http-envoy-prom")?.containerPort;
  const sock = l.address.socket_address;
  check(`${v}: the stats listener listens on the pod's addresses at container port http-envoy-prom`,
    sock.address === "0.0.0.0" && sock.port_value === port, `${sock.address}:${sock.port_value} vs ${port}`);
  const ann = gw.spec.template.metadata.annotations ?? {};
  const annotated = ann["prometheus.io/scrape"] !== undefined;
  check(`${v}: the prometheus.io annotations name the stats port and path (when written)`, !annotated ||
    (ann["prometheus.io/scrape"] === "true" && ann["prometheus.io/port"] === String(port) && ann["prometheus.io/path"] === "/stats/prometheus"),
    JSON.stringify(ann));
  const hcm = l.filter_chains.flatMap((fc) => fc.filters)
    .find((f) => f.name === "envoy.filters.network.http_connection_manager")?.typed_config;
  const routes = (hcm?.route_config?.virtual_hosts ?? []).flatMap((vh) => vh.routes);
  const admin = bootstrap.static_resources.clusters.find((c) => c.name === routes[0]?.route?.cluster);
  const dialled = admin?.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
  check(`${v}: the stats listener routes GET /stats/prometheus (exactly) to the admin address, and nothing else`,
    routes.length === 1 && routes[0].match.path === "/stats/prometheus" && Object.keys(routes[0].match).length === 2 &&
    routes[0].match.headers?.[0]?.name === ":method" && routes[0].match.headers[0].string_match?.exact === "GET" &&
    dialled?.address === "127.0.0.1" && String(dialled?.port_value) === env.ADMIN_PORT, JSON.stringify(routes));
  check(`${v}: the stats listener runs no Switchyard filter and counts under its own stat prefix`,
    hcm.http_filters.map((f) => f.name).join() === "envoy.filters.http.router" && hcm.stat_prefix !== "switchyard");
  check(`${v}: the stats listener is not an inbound listener (the preStop drains those only)`,
    l.traffic_direction === undefined);
}

// The chart's bootstrap files must be what `switchyard bootstrap` prints today.
function checkBootstrapFile() {
  const common = ["bootstrap", "--config", path.join(CHART, "files/switchyard.yaml"), "--node", "envoy", "--admin", "127.0.0.1:9901",
    "--stats-addr", "0.0.0.0:9902"];
  const r = run(SWITCHYARD, [...common, "--xds", "127.0.0.1:18000"]);
  const committed = fs.readFileSync(path.join(CHART, "files/envoy-bootstrap.yaml"), "utf8");
  check("chart files/envoy-bootstrap.yaml is `switchyard bootstrap` output (deploy/kubernetes/update-bootstrap.sh)",
    r.ok && r.out === committed.trim(), r.ok ? "differs" : r.out);
  const sdsOut = path.join(TMP, "sds");
  const t = run(SWITCHYARD, [...common, "--xds", "switchyard-control-plane.placeholder:18000",
    "--tls-cert", "/etc/switchyard/tls/tls.crt", "--tls-key", "/etc/switchyard/tls/tls.key", "--tls-ca", "/etc/switchyard/tls/ca.crt",
    "--sds-dir", "/etc/envoy", "--sds-out", sdsOut]);
  const same = (f, text) => fs.readFileSync(path.join(CHART, "files", f), "utf8").trim() === text.trim();
  check("chart files/envoy-bootstrap-tls.yaml and its SDS files are `switchyard bootstrap` output (deploy/kubernetes/update-bootstrap.sh)",
    t.ok && same("envoy-bootstrap-tls.yaml", t.out) &&
    ["switchyard-client.sds.yaml", "switchyard-ca.sds.yaml"].every((f) => same(f, fs.readFileSync(path.join(sdsOut, f), "utf8"))),
    t.ok ? "differs" : t.out);
}

// istio.gatewayNamespace: the control plane admits the Istio gateways' fleet
// streams (certificate-named, no xDS), they may reach its xDS port, and its
// sidecar leaves that port alone.
function checkIstioGateways(objs, v, ns) {
  const cp = byKind(objs, "Deployment").find((d) => d.metadata.name.endsWith("-control-plane"));
  const args = cp.spec.template.spec.containers[0].args;
  const xds = cp.spec.template.spec.containers[0].ports.find((p) => p.name === "xds").containerPort;
  const gw = byKind(objs, "Deployment").find((d) => d.metadata.name.endsWith("-gateway")).metadata.name;
  check(`${v}: the control plane runs --fleet-without-xds with a rule for Istio proxy ids`,
    args.includes("--fleet-without-xds") && args.includes(`${gw}=router~*`), args.join(" "));
  check(`${v}: the control plane's sidecar leaves the xDS port alone`,
    cp.spec.template.metadata.annotations?.["traffic.sidecar.istio.io/excludeInboundPorts"] === String(xds));
  const np = byKind(objs, "NetworkPolicy")[0];
  check(`${v}: the Istio gateways of ${ns} may reach the xDS port`, np.spec.ingress.some((r) =>
    r.from.some((f) => f.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"] === ns &&
      f.podSelector?.matchLabels?.istio === "ingressgateway") && r.ports.some((p) => p.port === xds)));
}

// The in-mesh patches, assembled into the listener, route and clusters Istio
// would produce, checked by Envoy 1.40 (with the built filter, which rejects a
// filter config it cannot read).
function checkInMesh(objs) {
  const ef = byKind(objs, "EnvoyFilter")[0];
  const patch = (applyTo) => ef.spec.configPatches.filter((p) => p.applyTo === applyTo).map((p) => p.patch);
  const [planner, router] = patch("HTTP_FILTER").map((p) => p.value);
  const vhost = patch("VIRTUAL_HOST")[0].value;
  const route = patch("HTTP_ROUTE")[0].value.route;
  const clusters = byKind(objs, "ServiceEntry").flatMap((se) => se.spec.ports.map((p) => {
    const dr = byKind(objs, "DestinationRule").find((d) => d.spec.host === se.spec.hosts[0]);
    const tls = dr?.spec.trafficPolicy.portLevelSettings.find((s) => s.port.number === p.number)?.tls;
    return {
      name: `outbound|${p.number}||${se.spec.hosts[0]}`, type: "LOGICAL_DNS", connect_timeout: "1s",
      load_assignment: { cluster_name: "x", endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: se.spec.hosts[0], port_value: p.targetPort ?? p.number } } } }] }] },
      ...(tls?.mode === "SIMPLE" ? { transport_socket: { name: "envoy.transport_sockets.tls", typed_config: { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", sni: tls.sni } } } : {}),
    };
  }));
  const names = new Set(clusters.map((c) => c.name));
  // The planner's fleet link: the cluster Istio makes for the control plane's
  // Service, with a DestinationRule for mutual TLS with the gateway Secret.
  const fleet = JSON.parse(planner.typed_config.config.configuration.value).fleet;
  const [, fleetPort, , fleetHost] = (fleet?.cluster ?? "").split("|");
  const fleetTls = byKind(objs, "DestinationRule").find((d) => d.spec.host === fleetHost)
    ?.spec.trafficPolicy.portLevelSettings.find((s) => s.port.number === Number(fleetPort))?.tls;
  check("in-mesh planner: the fleet stream (gRPC) goes to the control plane's Service with mutual TLS",
    fleet?.transport === "grpc" && !fleet.node && fleetTls?.mode === "MUTUAL" && !!fleetTls.credentialName,
    JSON.stringify({ fleet, fleetTls }));
  for (const w of [planner.typed_config.config, router.typed_config.upstream_http_filters[0].typed_config.config]) {
    const fc = JSON.parse(w.configuration.value);
    for (const [p, prov] of Object.entries(fc.providers)) {
      check(`in-mesh ${fc.role}: provider ${p}'s cluster comes from a ServiceEntry`, names.has(prov.cluster), prov.cluster);
      check(`in-mesh ${fc.role}: provider ${p}'s keys are in no config`, !prov.api_keys && !prov.aws);
    }
    if (chartConfig) {
      const g = run(SWITCHYARD, ["filter-config", "--config", chartConfig, "--role", fc.role, "--istio",
        "--fleet", `${fleetHost}:${fleetPort}`]);
      let same = false;
      try { same = g.ok && isDeepStrictEqual(JSON.parse(g.out), fc); } catch { same = false; }
      check(`in-mesh ${fc.role}: the filter config is \`switchyard filter-config --istio\` output for the chart's config`,
        same, g.ok ? `differs; expected:\n${g.out}` : g.out);
    }
  }
  clusters.push({ name: fleet.cluster, type: "STRICT_DNS", connect_timeout: "1s",
    typed_extension_protocol_options: { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
      "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
      explicit_http_config: { http2_protocol_options: {} } } },
    load_assignment: { cluster_name: "cp", endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: fleetHost, port_value: Number(fleetPort) } } } }] }] } });
  const matched = JSON.stringify(route).match(/"cluster":"[^"]+"/g).map((m) => m.slice(11, -1));
  check("in-mesh route: every slot cluster comes from a ServiceEntry", matched.every((c) => names.has(c)), matched.join(","));
  const filterServer = named(objs, "Service", "switchyard-filter");
  clusters.push({ name: `outbound|80||switchyard-filter.switchyard.svc.cluster.local`, type: "STRICT_DNS", connect_timeout: "1s",
    load_assignment: { cluster_name: "f", endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: "switchyard-filter.switchyard.svc.cluster.local", port_value: filterServer.spec.ports[0].port } } } }] }] } });
  const built = fs.existsSync(WASM);
  if (built) planner.typed_config.config.vm_config.code = { local: { filename: WASM } };
  const bootstrap = {
    static_resources: {
      listeners: [{
        name: "gateway", address: { socket_address: { address: "127.0.0.1", port_value: 0 } },
        per_connection_buffer_limit_bytes: patch("LISTENER")[0].value.per_connection_buffer_limit_bytes,
        filter_chains: [{ filters: [{ name: "envoy.filters.network.http_connection_manager", typed_config: {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
          stat_prefix: "gateway",
          route_config: { virtual_hosts: [{ name: "llm.example.com:80", domains: ["*"], ...vhost, routes: [{ match: { prefix: "/" }, route }] }] },
          http_filters: [planner, { name: "envoy.filters.http.router", ...router }],
        } }] }],
      }],
      clusters,
    },
  };
  const file = path.join(TMP, "in-mesh.json");
  fs.writeFileSync(file, JSON.stringify(bootstrap));
  const r = run(ENVOY, ["--mode", "validate", "-c", file, "--log-level", "error"]);
  check(`in-mesh: envoy --mode validate on the patched gateway${built ? " (filter configs read by the built filter)" : ""}`,
    r.ok, lastLine(r.out));
  if (!built) console.log(`note: ${path.relative(ROOT, WASM)} not built: the in-mesh filter configs were not read by the filter`);
}

// --- the checker checks itself ---------------------------------------------------

async function selfCheck(objs) {
  const dep = structuredClone(byKind(objs, "Deployment")[0]);
  const typo = structuredClone(dep);
  typo.spec.replicas = "two";
  const unknown = structuredClone(dep);
  unknown.spec.template.spec.containers[0].readinessProbes = unknown.spec.template.spec.containers[0].readinessProbe;
  const cases = [
    ["a wrong field type", typo],
    ["an unknown field", unknown],
    ["a kind without a schema", { apiVersion: "example.com/v1", kind: "Gizmo", metadata: { name: "x" } }],
  ];
  for (const [what, obj] of cases) {
    const cls = await modelFor(obj.apiVersion, obj.kind);
    const refused = !cls || validateStrict(cls, obj).length > 0;
    check(`self-check: ${what} is refused`, refused);
  }
  // The chart's values.schema.json: a misspelt value fails the render.
  for (const set of ["gateway.replica=3", "filter.delivery=ftp", "images.envoy.tag=latest", "gateway.metrics.port=0", "gateway.metrics.scrape=true"]) {
    check(`self-check: helm refuses --set ${set}`, !run(HELM, ["template", "sy", CHART, "--set", set]).ok);
  }
  // A config of your own must name the filter as filter.delivery delivers it.
  const chartConfig = fs.readFileSync(path.join(CHART, "files/switchyard.yaml"), "utf8");
  const filterLine = /^filter: .*$/m;
  const own = (name, line) => {
    const file = path.join(TMP, `config-${name}.yaml`);
    fs.writeFileSync(file, chartConfig.replace(filterLine, line));
    return file;
  };
  const wasm = "/opt/switchyard/filter/switchyard_filter.wasm";
  const served = own("served", `filter:\n  wasm: ${wasm}\n  serve: true`);
  const configCases = [
    ["remote delivery of the native module", "remote", own("native", "filter: { module: /opt/switchyard/filter/libswitchyard_native.so }"), "not the native module"],
    ["remote delivery of a config without serve: true", "remote", own("local", `filter: { wasm: ${wasm} }`), "needs `filter: {"],
    ["remote delivery of a served file outside filter.mountPath", "remote", own("elsewhere", "filter: { wasm: /srv/switchyard_filter.wasm, serve: true }"), "needs `filter: {"],
    ["image delivery of a config with serve: true", "image", served, "serve: true needs filter.delivery remote"],
  ];
  for (const [what, delivery, file, why] of configCases) {
    const r = run(HELM, ["template", "sy", CHART, "--set", `filter.delivery=${delivery}`, "--set-file", `config=${file}`]);
    check(`self-check: helm refuses ${what}`, !r.ok && r.out.includes(why), r.ok ? "rendered" : lastLine(r.out));
  }
  const r = run(HELM, ["template", "sy", CHART, "--set", "filter.delivery=remote", "--set-file", `config=${served}`]);
  check("self-check: helm renders remote delivery with a config of your own that serves the filter", r.ok, lastLine(r.out));
  // A bootstrap of your own without the stats listener: the port the pod
  // declares and annotates would answer nothing.
  const noStats = path.join(TMP, "bootstrap-no-stats.yaml");
  const b = run(SWITCHYARD, ["bootstrap", "--node", "envoy", "--admin", "127.0.0.1:9901", "--xds", "switchyard-control-plane.placeholder:18000",
    "--tls-cert", "/etc/switchyard/tls/tls.crt", "--tls-key", "/etc/switchyard/tls/tls.key", "--tls-ca", "/etc/switchyard/tls/ca.crt",
    "--sds-dir", "/etc/envoy", "--sds-out", path.join(TMP, "sds-no-stats")]);
  fs.writeFileSync(noStats, b.out);
  const n = run(HELM, ["template", "sy", CHART, "--set-file", `gateway.bootstrap=${noStats}`]);
  check("self-check: helm refuses a gateway bootstrap without the stats listener", b.ok && !n.ok && n.out.includes("--stats-addr"),
    n.ok ? "rendered" : lastLine(n.out));
}

// --- main --------------------------------------------------------------------------

const started = Date.now();
const counts = {};
let first;
try {
  for (const v of VARIANTS) {
    const objs = render(v);
    first ??= objs;
    for (const o of objs) {
      await validateObject(o, `chart (${v.name})`);
      counts[o.kind] = (counts[o.kind] ?? 0) + 1;
    }
    checkPods(objs, v.name);
    if (v.istio) checkIstioGateways(objs, v.name, v.istio);
    const config = checkControlPlaneConfig(objs, v.name, v.delivery);
    checkGateway(objs, v.name, config, v.delivery);
  }
  checkBootstrapFile();
  const lint = run(HELM, ["lint", "--strict", CHART]);
  check("helm lint --strict", lint.ok, lastLine(lint.out));
  const istioDir = path.join(ROOT, "deploy/istio");
  const istio = fs.readdirSync(istioDir, { recursive: true }).filter((f) => /\.ya?ml$/.test(f)).sort()
    .flatMap((f) => readDocs(fs.readFileSync(path.join(istioDir, f), "utf8"), f));
  for (const o of istio) {
    await validateObject(o, "istio");
    counts[o.kind] = (counts[o.kind] ?? 0) + 1;
  }
  checkPods(istio, "istio");
  checkInMesh(istio);
  await selfCheck(first);
} catch (e) {
  failures.push(`stopped: ${e.stack ?? e}`);
} finally {
  fs.rmSync(TMP, { recursive: true, force: true });
}
console.log(`objects: ${Object.entries(counts).sort().map(([k, n]) => `${n} ${k}`).join(", ")}`);
for (const f of failures) console.log(`FAILED ${f}`);
console.log(`validate-deploy: ${passed} passed, ${failures.length} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(failures.length ? 1 : 0);
