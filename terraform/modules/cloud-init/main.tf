# Cloud-init documents for every kind of node in one region. Pure: no resources, no
# providers. Every node gets the same topology JSON; its role's secrets (and, with the
# topology's tls, the NATS TLS files) are fetched from SSM at each service start and the NATS
# config is rendered from the topology by `edgemesh nats-config`, never written here.

locals {
  topology = var.topology
  this     = one([for r in local.topology.regions : r if r.name == var.region])

  # Where the control plane keeps its copy of the operator's MaxMind City database.
  geoip_db_path = "/var/lib/edgemesh/geoip/city.mmdb"

  common = {
    region           = var.region
    topology_json    = jsonencode(var.topology)
    edgemesh_version = var.edgemesh_version
    store_dir        = var.nats_store_dir
    geoip_db_s3_uri  = var.geoip_db_s3_uri == null ? "" : var.geoip_db_s3_uri
    geoip_db_path    = local.geoip_db_path

    # NATS TLS: every node fetches the CA certificate, NATS servers their own files too.
    tls              = var.topology.tls != null
    tls_ca_file      = var.topology.tls == null ? "" : var.topology.tls.ca_file
    tls_cert_file    = var.topology.tls == null ? "" : var.topology.tls.cert_file
    tls_key_file     = var.topology.tls == null ? "" : var.topology.tls.key_file
    tls_ca_parameter = var.topology.tls == null ? "" : var.tls_ca_parameter_name
  }

  nats = [
    for i, server in local.this.nats : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", merge(local.common, {
      role              = "nats"
      server            = i + 1
      name              = server.name
      secrets_parameter = var.secrets_parameter_names.nats
      # With tls, nats_tls_parameter_names must name this server's parameters.
      tls_cert_parameter = var.topology.tls == null ? "" : var.nats_tls_parameter_names[i].cert
      tls_key_parameter  = var.topology.tls == null ? "" : var.nats_tls_parameter_names[i].key
    }))
  ]

  edge = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", merge(local.common, {
    role               = "edge"
    server             = 0
    name               = local.this.edges[0].name
    secrets_parameter  = var.secrets_parameter_names.edge
    tls_cert_parameter = ""
    tls_key_parameter  = ""
  }))

  control_plane = templatefile("${path.module}/templates/cloud-init.yaml.tftpl", merge(local.common, {
    role               = "control-plane"
    server             = 0
    name               = "${var.region}-cp"
    secrets_parameter  = var.secrets_parameter_names.control_plane
    tls_cert_parameter = ""
    tls_key_parameter  = ""
  }))
}
