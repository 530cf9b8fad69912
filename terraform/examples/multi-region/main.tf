# Three edgemesh regions (eu, us, ap) in three AWS regions, one shared topology,
# and the geo-DNS zone delegated to the three control planes.
#
# Terraform cannot for_each over providers, so each region is its own module block
# with its own provider alias. The topology names every server by a stable DNS name
# (nats-N.REGION.DOMAIN), so each region's gateways point at names, not at other
# regions' outputs: no dependency cycle between regions.

provider "aws" {
  alias  = "eu"
  region = var.aws_regions.eu
}

provider "aws" {
  alias  = "us"
  region = var.aws_regions.us
}

provider "aws" {
  alias  = "ap"
  region = var.aws_regions.ap
}

# Route 53 is global; its calls go through the eu provider.
provider "aws" {
  alias  = "dns"
  region = var.aws_regions.eu
}

locals {
  regions = {
    eu = { latitude = 50.11, longitude = 8.68, vpc_cidr = "10.10.0.0/16" }
    us = { latitude = 39.04, longitude = -77.49, vpc_cidr = "10.20.0.0/16" }
    ap = { latitude = 1.35, longitude = 103.82, vpc_cidr = "10.30.0.0/16" }
  }
  order = ["eu", "us", "ap"]

  # Known before apply (the addresses of load balancers and servers are not): the
  # topology's structure, which every module's counts and security rules follow.
  edge_addresses = {
    eu = module.eu.edge_addresses
    us = module.us.edge_addresses
    ap = module.ap.edge_addresses
  }

  # The control planes' Elastic IPs, also known only after apply: each geo-DNS server
  # answers its own name (ns-REGION.ZONE) and the apex glue with this address, and the
  # dns module's glue in Route 53 is the same value. No cycle: a module's outputs are
  # separate graph nodes, and the Elastic IPs depend on nothing in the topology.
  control_plane_addresses = {
    eu = module.eu.control_plane_public_ip
    us = module.us.control_plane_public_ip
    ap = module.ap.control_plane_public_ip
  }

  # The NATS servers' Elastic IPs and their AWS DNS names (known after apply): their
  # certificates name them besides nats-N.REGION.DOMAIN. No cycle either: the pki module
  # signs after the Elastic IPs exist, and the regions' instances wait for the result.
  nats_addresses = {
    eu = { public_ips = module.eu.nats_public_ips, public_dns = module.eu.nats_public_dns }
    us = { public_ips = module.us.nats_public_ips, public_dns = module.us.nats_public_dns }
    ap = { public_ips = module.ap.nats_public_ips, public_dns = module.ap.nats_public_dns }
  }

  topology = {
    regions = [
      for name in local.order : {
        name      = name
        latitude  = local.regions[name].latitude
        longitude = local.regions[name].longitude
        nats = [
          for k in range(var.nats_servers_per_region) : {
            name           = "${name}-n${k + 1}"
            host           = "0.0.0.0"
            advertise_host = "nats-${k + 1}.${name}.${var.domain}"
            client_port    = 4222
            cluster_port   = 6222
            gateway_port   = 7222
            monitor_port   = 8222
          }
        ]
        edges = [{
          name      = "${name}-edge"
          url       = contains(keys(var.certificate_arns), name) ? "https://edge.${name}.${var.domain}" : "http://edge.${name}.${var.domain}"
          bind_host = "0.0.0.0"
        }]
        control_plane = {
          url       = "http://cp.${name}.${var.domain}:8080"
          bind_host = "0.0.0.0"
          # The DNS listener binds the instance's private address; the world reaches
          # it at the Elastic IP the delegation's glue records give, which is what the
          # server advertises for itself.
          dns_host           = cidrhost(cidrsubnet(local.regions[name].vpc_cidr, 4, 0), 10)
          dns_port           = 53
          dns_public_address = local.control_plane_addresses[name]
        }
        public_addresses = local.edge_addresses[name]
      }
    ]
    dns = {
      zone           = "geo.${var.domain}"
      ttl_s          = 30
      default_region = "eu"
    }
    # Every NATS listener speaks TLS only (mutual TLS for routes and gateways); the
    # files are made by module "pki" and fetched by each node from SSM to these paths.
    tls = {
      ca_file   = "/etc/edgemesh/tls/ca.pem"
      cert_file = "/etc/edgemesh/tls/nats.pem"
      key_file  = "/etc/edgemesh/tls/nats-key.pem"
    }
  }
}

# One CA for the deployment, one certificate per NATS server (hashicorp/tls).
module "pki" {
  source = "../../modules/pki"

  topology       = local.topology
  nats_addresses = local.nats_addresses
}

module "eu" {
  source    = "../../modules/region"
  providers = { aws = aws.eu }

  region             = "eu"
  topology           = local.topology
  secrets            = var.secrets
  nats_tls           = module.pki.nats_tls["eu"]
  edgemesh_version   = var.edgemesh_version
  vpc_cidr           = local.regions.eu.vpc_cidr
  operator_cidrs     = var.operator_cidrs
  certificate_arn    = lookup(var.certificate_arns, "eu", null)
  availability_zones = lookup(var.availability_zones, "eu", null)
  ami_id             = lookup(var.ami_ids, "eu", null)
  geoip_db_s3_uri    = var.geoip_db_s3_uri

  peer_nats_cidrs          = [for ip in concat(module.us.nats_public_ips, module.ap.nats_public_ips) : "${ip}/32"]
  peer_control_plane_cidrs = [for ip in [module.us.control_plane_public_ip, module.ap.control_plane_public_ip] : "${ip}/32"]
}

module "us" {
  source    = "../../modules/region"
  providers = { aws = aws.us }

  region             = "us"
  topology           = local.topology
  secrets            = var.secrets
  nats_tls           = module.pki.nats_tls["us"]
  edgemesh_version   = var.edgemesh_version
  vpc_cidr           = local.regions.us.vpc_cidr
  operator_cidrs     = var.operator_cidrs
  certificate_arn    = lookup(var.certificate_arns, "us", null)
  availability_zones = lookup(var.availability_zones, "us", null)
  ami_id             = lookup(var.ami_ids, "us", null)
  geoip_db_s3_uri    = var.geoip_db_s3_uri

  peer_nats_cidrs          = [for ip in concat(module.eu.nats_public_ips, module.ap.nats_public_ips) : "${ip}/32"]
  peer_control_plane_cidrs = [for ip in [module.eu.control_plane_public_ip, module.ap.control_plane_public_ip] : "${ip}/32"]
}

module "ap" {
  source    = "../../modules/region"
  providers = { aws = aws.ap }

  region             = "ap"
  topology           = local.topology
  secrets            = var.secrets
  nats_tls           = module.pki.nats_tls["ap"]
  edgemesh_version   = var.edgemesh_version
  vpc_cidr           = local.regions.ap.vpc_cidr
  operator_cidrs     = var.operator_cidrs
  certificate_arn    = lookup(var.certificate_arns, "ap", null)
  availability_zones = lookup(var.availability_zones, "ap", null)
  ami_id             = lookup(var.ami_ids, "ap", null)
  geoip_db_s3_uri    = var.geoip_db_s3_uri

  peer_nats_cidrs          = [for ip in concat(module.eu.nats_public_ips, module.us.nats_public_ips) : "${ip}/32"]
  peer_control_plane_cidrs = [for ip in [module.eu.control_plane_public_ip, module.us.control_plane_public_ip] : "${ip}/32"]
}

module "dns" {
  source    = "../../modules/dns"
  providers = { aws = aws.dns }

  parent_zone_id = var.parent_zone_id
  topology       = local.topology
  regions = {
    eu = module.eu.dns_records
    us = module.us.dns_records
    ap = module.ap.dns_records
  }
}
