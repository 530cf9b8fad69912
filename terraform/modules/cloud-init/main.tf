# Cloud-init documents for every kind of node in one region. Pure: no resources, no
# providers. Every node gets the same topology JSON; secrets are fetched from SSM at
# each service start and the NATS config is rendered from the topology by
# `edgemesh nats-config`, never written here.

locals {
  topology = var.topology
  this     = one([for r in local.topology.regions : r if r.name == var.region])

  # Where the control plane keeps its copy of the operator's MaxMind City database.
  geoip_db_path = "/var/lib/edgemesh/geoip/city.mmdb"

  common = {
    region            = var.region
    topology_json     = jsonencode(var.topology)
    edgemesh_version  = var.edgemesh_version
    secrets_parameter = var.secrets_parameter_name
    store_dir         = var.nats_store_dir
    geoip_db_s3_uri   = var.geoip_db_s3_uri == null ? "" : var.geoip_db_s3_uri
    geoip_db_path     = local.geoip_db_path
  }

  nats = [
    for i, server in local.this.nats : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", merge(local.common, {
      role   = "nats"
      server = i + 1
      name   = server.name
    }))
  ]

  edge = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", merge(local.common, {
    role   = "edge"
    server = 0
    name   = local.this.edges[0].name
  }))

  control_plane = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", merge(local.common, {
    role   = "control-plane"
    server = 0
    name   = "${var.region}-cp"
  }))
}
