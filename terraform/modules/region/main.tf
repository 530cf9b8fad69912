# One edgemesh region on AWS. Everything about the region's processes (NATS servers,
# their ports and DNS names, the edge URL, the control plane's addresses) is read from
# the shared topology, the same JSON every node gets, so Terraform and edgemesh can
# never disagree about it.

locals {
  topology = var.topology
  this     = one([for r in local.topology.regions : r if r.name == var.region])

  nats_servers  = local.this.nats
  edge          = local.this.edges[0]
  control_plane = local.this.control_plane

  # scheme, host, port (or null) of the edge and control-plane URLs.
  edge_url_parts = regex("^(https?)://([^/:]+)(?::([0-9]+))?/?$", local.edge.url)
  cp_url_parts   = regex("^(https?)://([^/:]+)(?::([0-9]+))?/?$", local.control_plane.url)

  # The one port open to the world besides DNS: where clients reach the edges.
  client_port = tonumber(coalesce(local.edge_url_parts[2], local.edge_url_parts[0] == "https" ? "443" : "80"))
  api_port    = tonumber(coalesce(local.cp_url_parts[2], local.cp_url_parts[0] == "https" ? "443" : "80"))
  dns_port    = local.control_plane.dns_port

  nats_client_ports  = toset([for s in local.nats_servers : s.client_port])
  nats_cluster_ports = toset([for s in local.nats_servers : s.cluster_port])
  nats_gateway_ports = toset([for s in local.nats_servers : s.gateway_port])
  nats_monitor_ports = toset([for s in local.nats_servers : s.monitor_port])

  name = "${var.name}-${var.region}"
  tags = merge(var.tags, { "edgemesh:region" = var.region })

  # Secrets, one SSM parameter per role, each holding only what that role needs (the
  # secrets JSON of mesh/secrets.py, fields it does not need left out): edges and control
  # planes their own NATS password and the API keys; NATS servers every NATS password
  # (their config lists each user and the route and gateway auth) and no API key.
  secrets_parameter_prefix = "/${var.name}/${var.region}/secrets"
  secrets_parameter_names = {
    edge          = "${local.secrets_parameter_prefix}/edge"
    control_plane = "${local.secrets_parameter_prefix}/control"
    nats          = "${local.secrets_parameter_prefix}/nats"
  }

  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.al2023[0].id

  # NATS TLS (the topology's tls): SSM parameters named like the files on the hosts.
  tls_enabled = var.topology.tls != null
  tls_parameter_names = {
    ca = "/${var.name}/${var.region}/tls/ca.pem"
    nats = [
      for k in range(length(local.nats_servers)) : {
        cert = "/${var.name}/${var.region}/tls/nats-${k + 1}.pem"
        key  = "/${var.name}/${var.region}/tls/nats-${k + 1}-key.pem"
      }
    ]
  }
}

data "aws_partition" "current" {}

# Amazon Linux 2023: python3.11 is a dnf package and the aws CLI is preinstalled.
data "aws_ami" "al2023" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["amazon"]

  filter {
    name   = "name"
    values = ["al2023-ami-2023.*-x86_64"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

module "cloud_init" {
  source = "../cloud-init"

  topology                 = var.topology
  region                   = var.region
  edgemesh_version         = var.edgemesh_version
  secrets_parameter_names  = local.secrets_parameter_names
  geoip_db_s3_uri          = var.geoip_db_s3_uri
  tls_ca_parameter_name    = local.tls_parameter_names.ca
  nats_tls_parameter_names = local.tls_parameter_names.nats
}

################################################################################
# Secrets: in SSM Parameter Store, one SecureString per role, fetched by the nodes
# of that role only (each role's instance role may read its own), never in user data
################################################################################

resource "aws_ssm_parameter" "secrets_edge" {
  name        = local.secrets_parameter_names.edge
  description = "edgemesh secrets of the edges of region ${var.region} (the edge NATS password, API keys)"
  type        = "SecureString"
  value = jsonencode({
    nats     = { edge = var.secrets.nats.edge }
    api_keys = var.secrets.api_keys
  })
  tags = local.tags
}

resource "aws_ssm_parameter" "secrets_control_plane" {
  name        = local.secrets_parameter_names.control_plane
  description = "edgemesh secrets of the control plane of region ${var.region} (the control NATS password, API keys)"
  type        = "SecureString"
  value = jsonencode({
    nats     = { control = var.secrets.nats.control }
    api_keys = var.secrets.api_keys
  })
  tags = local.tags
}

resource "aws_ssm_parameter" "secrets_nats" {
  name        = local.secrets_parameter_names.nats
  description = "edgemesh secrets of the NATS servers of region ${var.region} (every NATS password, no API key)"
  type        = "SecureString"
  value = jsonencode({
    nats = {
      edge    = var.secrets.nats.edge
      control = var.secrets.nats.control
      sys     = var.secrets.nats.sys
      route   = var.secrets.nats.route
      gateway = var.secrets.nats.gateway
    }
    api_keys = []
  })
  tags = local.tags
}

# NATS TLS, fetched with the secrets to the topology's tls paths: the CA certificate
# (public) for every node, each server's certificate and private key for that server.
# The topology has tls, so nats_tls must be given (the pki module's output).
resource "aws_ssm_parameter" "tls_ca" {
  count = local.tls_enabled ? 1 : 0

  name        = local.tls_parameter_names.ca
  description = "edgemesh NATS CA certificate (public), for the nodes of region ${var.region}"
  type        = "String"
  value       = var.nats_tls.ca_cert_pem
  tags        = local.tags
}

resource "aws_ssm_parameter" "nats_cert" {
  count = local.tls_enabled ? length(local.nats_servers) : 0

  name        = local.tls_parameter_names.nats[count.index].cert
  description = "edgemesh NATS server certificate of ${local.nats_servers[count.index].name}"
  type        = "String"
  value       = var.nats_tls.servers[count.index].cert_pem
  tags        = local.tags
}

resource "aws_ssm_parameter" "nats_key" {
  count = local.tls_enabled ? length(local.nats_servers) : 0

  name        = local.tls_parameter_names.nats[count.index].key
  description = "edgemesh NATS server private key of ${local.nats_servers[count.index].name}"
  type        = "SecureString"
  value       = var.nats_tls.servers[count.index].key_pem
  tags        = local.tags
}

################################################################################
# Instance roles, one per kind of node: each may read its own secrets parameter and
# the TLS files it needs, and be reached by SSM Session Manager. Only NATS servers may
# read the route, gateway and sys passwords and the servers' private keys; only the
# control plane may read the GeoIP database.
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# Edges: their secrets and the CA certificate.
data "aws_iam_policy_document" "edge" {
  statement {
    actions   = ["ssm:GetParameter"]
    resources = concat([aws_ssm_parameter.secrets_edge.arn], aws_ssm_parameter.tls_ca[*].arn)
  }
}

# The control plane: its secrets and the CA certificate (and the GeoIP database, below).
data "aws_iam_policy_document" "control_plane" {
  statement {
    actions   = ["ssm:GetParameter"]
    resources = concat([aws_ssm_parameter.secrets_control_plane.arn], aws_ssm_parameter.tls_ca[*].arn)
  }
}

# NATS servers: their secrets, the CA certificate and the region's server certificates
# and keys.
data "aws_iam_policy_document" "nats" {
  statement {
    actions = ["ssm:GetParameter"]
    resources = concat(
      [aws_ssm_parameter.secrets_nats.arn],
      aws_ssm_parameter.tls_ca[*].arn,
      aws_ssm_parameter.nats_cert[*].arn,
      aws_ssm_parameter.nats_key[*].arn,
    )
  }
}

# -- edges ---------------------------------------------------------------------------

resource "aws_iam_role" "edge" {
  name_prefix        = "${substr(local.name, 0, 21)}-edge-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "edge" {
  name   = "read-edgemesh-secrets"
  role   = aws_iam_role.edge.id
  policy = data.aws_iam_policy_document.edge.json
}

resource "aws_iam_role_policy_attachment" "edge_ssm" {
  role       = aws_iam_role.edge.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "edge" {
  name_prefix = "${substr(local.name, 0, 21)}-edge-"
  role        = aws_iam_role.edge.name
  tags        = local.tags
}

# -- the control plane ---------------------------------------------------------------

resource "aws_iam_role" "control_plane" {
  name_prefix        = "${substr(local.name, 0, 23)}-cp-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "control_plane" {
  name   = "read-edgemesh-secrets"
  role   = aws_iam_role.control_plane.id
  policy = data.aws_iam_policy_document.control_plane.json
}

# The operator's MaxMind City database, fetched by the control plane: that one object.
resource "aws_iam_role_policy" "geoip" {
  count = var.geoip_db_s3_uri == null ? 0 : 1

  name = "read-edgemesh-geoip-db"
  role = aws_iam_role.control_plane.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "s3:GetObject"
      Resource = "arn:${data.aws_partition.current.partition}:s3:::${trimprefix(var.geoip_db_s3_uri, "s3://")}"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "control_plane_ssm" {
  role       = aws_iam_role.control_plane.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "control_plane" {
  name_prefix = "${substr(local.name, 0, 23)}-cp-"
  role        = aws_iam_role.control_plane.name
  tags        = local.tags
}

# -- NATS servers --------------------------------------------------------------------

resource "aws_iam_role" "nats" {
  name_prefix        = "${substr(local.name, 0, 21)}-nats-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "nats" {
  name   = "read-edgemesh-secrets-and-tls"
  role   = aws_iam_role.nats.id
  policy = data.aws_iam_policy_document.nats.json
}

resource "aws_iam_role_policy_attachment" "nats_ssm" {
  role       = aws_iam_role.nats.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "nats" {
  name_prefix = "${substr(local.name, 0, 21)}-nats-"
  role        = aws_iam_role.nats.name
  tags        = local.tags
}
