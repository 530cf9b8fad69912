# One edgemesh region: NATS cluster, edges behind a load balancer, control plane and
# its geo-DNS zone delegation.

provider "aws" {
  region = var.aws_region
}

locals {
  # Known only after apply; everything else in the topology is known before.
  edge_addresses = module.region.edge_addresses
  # The control plane's Elastic IP: what its geo-DNS server answers for its own name
  # and what Route 53's glue says (module "dns" takes it from the topology).
  control_plane_address = module.region.control_plane_public_ip
  # The NATS servers' Elastic IPs and their AWS DNS names (known after apply): their
  # certificates name them besides nats-N.REGION.DOMAIN.
  nats_addresses = {
    public_ips = module.region.nats_public_ips
    public_dns = module.region.nats_public_dns
  }

  topology = {
    regions = [{
      name      = var.region
      latitude  = var.latitude
      longitude = var.longitude
      nats = [
        for k in range(var.nats_servers) : {
          name           = "${var.region}-n${k + 1}"
          host           = "0.0.0.0"
          advertise_host = "nats-${k + 1}.${var.region}.${var.domain}"
          client_port    = 4222
          cluster_port   = 6222
          gateway_port   = 7222
          monitor_port   = 8222
        }
      ]
      edges = [{
        name      = "${var.region}-edge"
        url       = "http://edge.${var.region}.${var.domain}"
        bind_host = "0.0.0.0"
      }]
      control_plane = {
        url                = "http://cp.${var.region}.${var.domain}:8080"
        bind_host          = "0.0.0.0"
        dns_host           = cidrhost(cidrsubnet(var.vpc_cidr, 4, 0), 10)
        dns_port           = 53
        dns_public_address = local.control_plane_address
      }
      public_addresses = local.edge_addresses
    }]
    dns = {
      zone           = "geo.${var.domain}"
      ttl_s          = 30
      default_region = var.region
    }
    # Every NATS listener speaks TLS only (mutual TLS for routes); the files are made
    # by module "pki" and fetched by each node from SSM to these paths.
    tls = {
      ca_file   = "/etc/edgemesh/tls/ca.pem"
      cert_file = "/etc/edgemesh/tls/nats.pem"
      key_file  = "/etc/edgemesh/tls/nats-key.pem"
    }
  }
}

# The deployment's CA and one certificate per NATS server (hashicorp/tls).
module "pki" {
  source = "../../modules/pki"

  topology       = local.topology
  nats_addresses = { (var.region) = local.nats_addresses }
}

module "region" {
  source = "../../modules/region"

  region             = var.region
  topology           = local.topology
  secrets            = var.secrets
  nats_tls           = module.pki.nats_tls[var.region]
  edgemesh_version   = var.edgemesh_version
  vpc_cidr           = var.vpc_cidr
  operator_cidrs     = var.operator_cidrs
  availability_zones = var.availability_zones
  ami_id             = var.ami_id
  geoip_db_s3_uri    = var.geoip_db_s3_uri
}

module "dns" {
  source = "../../modules/dns"

  parent_zone_id = var.parent_zone_id
  topology       = local.topology
  regions        = { (var.region) = module.region.dns_records }
}
