################################################################################
# What to deploy
################################################################################

variable "region" {
  description = "Name of this region in the topology (e.g. \"eu\"), not the AWS region: the provider decides where it runs."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.region))
    error_message = "The region must be 1-32 of a-z 0-9 -, start with a letter and not end with '-'."
  }
}

variable "topology" {
  description = "The deployment's shared topology (mesh/topology.py; in HCL or jsondecode of the topology JSON), identical for every region; nodes get jsonencode(topology). Each region has one edge (the load balancer's URL; its port is the client port) and a control_plane whose dns_host is a private address in the region's first subnet (cidrsubnet(vpc_cidr, 4, 0)) and whose dns_public_address is the address resolvers reach its DNS server at (this module's control_plane_public_ip output), or null to advertise dns_host. Its tls gives the on-host paths of the NATS TLS files (see nats_tls), null for plain text. Terraform 1.0 has no optional attributes: give dns_public_address in every control_plane and tls, null when unused."
  type = object({
    regions = list(object({
      name      = string
      latitude  = number
      longitude = number
      nats = list(object({
        name           = string
        host           = string
        advertise_host = string
        client_port    = number
        cluster_port   = number
        gateway_port   = number
        monitor_port   = number
      }))
      edges = list(object({
        name      = string
        url       = string
        bind_host = string
      }))
      control_plane = object({
        url                = string
        bind_host          = string
        dns_host           = string
        dns_port           = number
        dns_public_address = string
      })
      public_addresses = list(string)
    }))
    dns = object({
      zone           = string
      ttl_s          = number
      default_region = string
    })
    tls = object({
      ca_file   = string
      cert_file = string
      key_file  = string
    })
  })

  validation {
    condition     = alltrue([for r in var.topology.regions : length(r.edges) == 1 && length(r.nats) >= 1])
    error_message = "Each region of the topology must have one or more NATS servers and exactly one edge: its load balancer URL (every node of the autoscaling group serves it)."
  }

  validation {
    condition     = alltrue([for r in var.topology.regions : alltrue([for s in r.nats : s.advertise_host != null && s.host == "0.0.0.0"])])
    error_message = "Every NATS server must bind host 0.0.0.0 and have an advertise_host (its stable DNS name): cloud nodes do not know their addresses in advance."
  }

  validation {
    condition     = alltrue([for r in var.topology.regions : r.control_plane.dns_public_address == null ? true : can(cidrhost("${r.control_plane.dns_public_address}/${length(regexall(":", r.control_plane.dns_public_address)) > 0 ? 128 : 32}", 0)) && !contains(["0.0.0.0", "::"], r.control_plane.dns_public_address)])
    error_message = "A control_plane's dns_public_address must be null or an IPv4 or IPv6 address other than 0.0.0.0 and :: (the name server's glue address)."
  }

  validation {
    condition     = var.topology.tls == null ? true : alltrue([for p in [var.topology.tls.ca_file, var.topology.tls.cert_file, var.topology.tls.key_file] : can(regex("^/[A-Za-z0-9_./-]+$", p))]) && length(distinct([var.topology.tls.ca_file, var.topology.tls.cert_file, var.topology.tls.key_file])) == 3
    error_message = "The topology's tls must be null or three different absolute paths of A-Z a-z 0-9 _ . - / (ca_file, cert_file, key_file: where the nodes keep the TLS files)."
  }
}

variable "edgemesh_version" {
  description = "The edgemesh release every node installs from PyPI (pip install edgemesh==VERSION)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)*((a|b|rc)[0-9]+)?(\\.post[0-9]+)?(\\.dev[0-9]+)?$", var.edgemesh_version))
    error_message = "The edgemesh_version must be an exact release such as 0.1.0 or 1.2.0rc1."
  }
}

variable "secrets" {
  description = "The deployment's secrets in the shape of mesh/secrets.py: NATS passwords per user (edge, control, sys, route, gateway) and API keys KEY_ID:SECRET. Stored as three SSM SecureStrings, one per role with only what it needs (edges: the edge password and the API keys; the control plane: the control password and the API keys; NATS servers: every password, no API key); never in user data or outputs."
  type = object({
    nats = object({
      edge    = string
      control = string
      sys     = string
      route   = string
      gateway = string
    })
    api_keys = list(string)
  })
  sensitive = true

  validation {
    condition     = alltrue([for v in values(var.secrets.nats) : can(regex("^[A-Za-z0-9_-]{16,}$", v))])
    error_message = "Every NATS password must be 16 or more of A-Z a-z 0-9 _ - (it is written into nats-server configs)."
  }

  validation {
    condition     = alltrue([for k in var.secrets.api_keys : can(regex("^[^:]+:.{16,}$", k))])
    error_message = "Every API key must be KEY_ID:SECRET with a secret of 16 or more characters."
  }
}

variable "nats_tls" {
  description = "The NATS servers' TLS material (the pki module's nats_tls output for this region): the deployment CA's certificate and, in topology order, each server's certificate and private key, all PEM. Required when the topology has tls; stored as SSM parameters (the keys as SecureStrings, readable by the NATS servers' role only) that nodes fetch at every start to the topology's tls paths; never in user data or outputs. Null without tls."
  type = object({
    ca_cert_pem = string
    servers = list(object({
      cert_pem = string
      key_pem  = string
    }))
  })
  default   = null
  sensitive = true

  validation {
    condition     = var.nats_tls == null ? true : length(regexall("-----BEGIN CERTIFICATE-----", var.nats_tls.ca_cert_pem)) > 0 && alltrue([for s in var.nats_tls.servers : length(regexall("-----BEGIN CERTIFICATE-----", s.cert_pem)) > 0 && length(regexall("-----BEGIN [A-Z ]*PRIVATE KEY-----", s.key_pem)) > 0])
    error_message = "The nats_tls certificates and keys must be PEM text (-----BEGIN CERTIFICATE----- and -----BEGIN ... PRIVATE KEY-----), not file names."
  }
}

variable "name" {
  description = "Prefix of every resource name (with the region appended)."
  type        = string
  default     = "edgemesh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,15}$", var.name))
    error_message = "The name must be 1-16 of a-z 0-9 -, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

################################################################################
# Network and access
################################################################################

variable "vpc_cidr" {
  description = "IPv4 CIDR of the region's VPC; subnet i is cidrsubnet(vpc_cidr, 4, i). Give every region its own range."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 4, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 24
    error_message = "The vpc_cidr must be an IPv4 CIDR with a prefix length of 16 to 24."
  }
}

variable "availability_zones" {
  description = "Availability zones for the subnets (two or more). Default: the first az_count available ones."
  type        = list(string)
  default     = null

  validation {
    condition     = var.availability_zones == null ? true : length(var.availability_zones) >= 2 && length(var.availability_zones) <= 16
    error_message = "Give two or more availability zones (at most 16): one zone is no redundancy."
  }
}

variable "az_count" {
  description = "How many availability zones to use when availability_zones is not given."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "The az_count must be a whole number from 2 to 6."
  }
}

variable "operator_cidrs" {
  description = "CIDRs of operators allowed to reach the control-plane API and NATS monitoring. Empty: nobody from outside."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.operator_cidrs : can(cidrnetmask(c)) && tonumber(split("/", c)[1]) >= 8])
    error_message = "Every operator CIDR must be an IPv4 CIDR no wider than /8 (never 0.0.0.0/0: monitoring and the API are not for the world)."
  }
}

variable "peer_nats_cidrs" {
  description = "CIDRs (/32 each) of the other regions' NATS servers, allowed to the gateway port. Empty for a single region."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.peer_nats_cidrs : can(cidrnetmask(c)) && tonumber(split("/", c)[1]) >= 16])
    error_message = "Every peer NATS CIDR must be an IPv4 CIDR no wider than /16 (normally a /32 per server)."
  }
}

variable "peer_control_plane_cidrs" {
  description = "CIDRs (/32 each) of the other regions' control planes, allowed to the NATS client and monitor ports (they probe every region)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.peer_control_plane_cidrs : can(cidrnetmask(c)) && tonumber(split("/", c)[1]) >= 16])
    error_message = "Every peer control-plane CIDR must be an IPv4 CIDR no wider than /16 (normally a /32)."
  }
}

variable "certificate_arn" {
  description = "ACM certificate for the edge URL's host. Given: the load balancer terminates TLS on the client port. Null: plain TCP."
  type        = string
  default     = null

  validation {
    condition     = var.certificate_arn == null ? true : can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "The certificate_arn must be an ACM certificate ARN."
  }
}

################################################################################
# Instances
################################################################################

variable "ami_id" {
  description = "AMI of every node (Amazon Linux 2023 or compatible: dnf, python3.11, aws CLI). Default: the latest Amazon Linux 2023."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null ? true : can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "The ami_id must look like ami-0123456789abcdef0."
  }
}

variable "nats_instance_type" {
  description = "Instance type of the NATS servers."
  type        = string
  default     = "t3.medium"
}

variable "nats_volume_size" {
  description = "Root volume size of each NATS server in GiB (JetStream data lives there)."
  type        = number
  default     = 50

  validation {
    condition     = var.nats_volume_size >= 8 && var.nats_volume_size <= 16384
    error_message = "The nats_volume_size must be 8 to 16384 GiB."
  }
}

variable "edge_instance_type" {
  description = "Instance type of the edge nodes."
  type        = string
  default     = "t3.medium"
}

variable "edge_min_size" {
  description = "Fewest edge nodes in the autoscaling group."
  type        = number
  default     = 2

  validation {
    condition     = var.edge_min_size >= 1 && floor(var.edge_min_size) == var.edge_min_size
    error_message = "The edge_min_size must be a whole number of 1 or more."
  }
}

variable "edge_max_size" {
  description = "Most edge nodes in the autoscaling group."
  type        = number
  default     = 6

  validation {
    condition     = var.edge_max_size >= 1 && var.edge_max_size <= 1000 && floor(var.edge_max_size) == var.edge_max_size
    error_message = "The edge_max_size must be a whole number from 1 to 1000."
  }
}

variable "edge_desired_capacity" {
  description = "Edge nodes to start with (between edge_min_size and edge_max_size)."
  type        = number
  default     = 2

  validation {
    condition     = var.edge_desired_capacity >= 1 && floor(var.edge_desired_capacity) == var.edge_desired_capacity
    error_message = "The edge_desired_capacity must be a whole number of 1 or more."
  }
}

variable "edge_deregistration_delay" {
  description = "Seconds the load balancer keeps a leaving edge's connections before dropping them (the edge drains its clients in that time)."
  type        = number
  default     = 60

  validation {
    condition     = var.edge_deregistration_delay >= 0 && var.edge_deregistration_delay <= 3600
    error_message = "The edge_deregistration_delay must be 0 to 3600 seconds."
  }
}

variable "control_plane_instance_type" {
  description = "Instance type of the control-plane instance."
  type        = string
  default     = "t3.small"
}

variable "geoip_db_s3_uri" {
  description = "S3 URI (s3://BUCKET/KEY.mmdb) of a MaxMind City database the operator uploaded (a licence is needed; none ships with edgemesh). The control plane's instance role (not the edges' or the NATS servers') may read that one object; the control plane fetches it before every start and runs with --geoip-db. Null: no database, and geo-DNS sends every client to the topology's default region."
  type        = string
  default     = null

  validation {
    condition     = var.geoip_db_s3_uri == null ? true : can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9_./+-]*\\.mmdb$", var.geoip_db_s3_uri))
    error_message = "The geoip_db_s3_uri must be null or s3://BUCKET/KEY.mmdb: a MaxMind City database (GeoLite2-City.mmdb or GeoIP2-City.mmdb, extracted from MaxMind's .tar.gz) in an S3 bucket."
  }
}
