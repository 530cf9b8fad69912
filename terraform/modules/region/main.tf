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

  topology               = var.topology
  region                 = var.region
  edgemesh_version       = var.edgemesh_version
  secrets_parameter_name = local.secrets_parameter_name
  geoip_db_s3_uri        = var.geoip_db_s3_uri
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

################################################################################
# Instance role: read the secrets parameter, be reachable by SSM Session Manager
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

data "aws_iam_policy_document" "node" {
  statement {
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.secrets.arn]
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
