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

  secrets_parameter_name = "/${var.name}/${var.region}/secrets"
  ami_id                 = var.ami_id != null ? var.ami_id : data.aws_ami.al2023[0].id

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
  secrets_parameter_name   = local.secrets_parameter_name
  geoip_db_s3_uri          = var.geoip_db_s3_uri
  tls_ca_parameter_name    = local.tls_parameter_names.ca
  nats_tls_parameter_names = local.tls_parameter_names.nats
}

################################################################################
# Secrets: in SSM Parameter Store, fetched by the nodes, never in user data
################################################################################

resource "aws_ssm_parameter" "secrets" {
  name        = local.secrets_parameter_name
  description = "edgemesh secrets of region ${var.region} (NATS credentials, API keys)"
  type        = "SecureString"
  value       = jsonencode(var.secrets)
  tags        = local.tags
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
# Instance roles: read the secrets parameter (and TLS files), be reachable by SSM
# Session Manager. NATS servers have their own role: only they may read the NATS
# servers' private keys, not the internet-facing edges or the control plane.
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

# Edges and the control plane: the secrets and the CA certificate.
data "aws_iam_policy_document" "node" {
  statement {
    actions   = ["ssm:GetParameter"]
    resources = concat([aws_ssm_parameter.secrets.arn], aws_ssm_parameter.tls_ca[*].arn)
  }
}

# NATS servers: the same, and the region's server certificates and keys.
data "aws_iam_policy_document" "nats" {
  statement {
    actions = ["ssm:GetParameter"]
    resources = concat(
      [aws_ssm_parameter.secrets.arn],
      aws_ssm_parameter.tls_ca[*].arn,
      aws_ssm_parameter.nats_cert[*].arn,
      aws_ssm_parameter.nats_key[*].arn,
    )
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${substr(local.name, 0, 26)}-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "node" {
  name   = "read-edgemesh-secrets"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

# The operator's MaxMind City database, fetched by the control plane: that one object.
resource "aws_iam_role_policy" "geoip" {
  count = var.geoip_db_s3_uri == null ? 0 : 1

  name = "read-edgemesh-geoip-db"
  role = aws_iam_role.node.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "s3:GetObject"
      Resource = "arn:${data.aws_partition.current.partition}:s3:::${trimprefix(var.geoip_db_s3_uri, "s3://")}"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  name_prefix = "${substr(local.name, 0, 26)}-"
  role        = aws_iam_role.node.name
  tags        = local.tags
}

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
