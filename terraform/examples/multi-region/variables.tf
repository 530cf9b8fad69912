variable "domain" {
  description = "The Route 53 hosted zone the deployment's names go in (e.g. example.com). Edges are edge.REGION.DOMAIN, NATS servers nats-N.REGION.DOMAIN, control planes cp.REGION.DOMAIN, and geo.DOMAIN is delegated to the control planes."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "The domain must be a lower-case DNS name such as example.com (no trailing dot)."
  }
}

variable "parent_zone_id" {
  description = "ID of the Route 53 hosted zone of var.domain."
  type        = string

  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,31}$", var.parent_zone_id))
    error_message = "The parent_zone_id must be a Route 53 hosted zone ID such as Z0123456789ABCDEFGHIJ."
  }
}

variable "aws_regions" {
  description = "The AWS region of each edgemesh region."
  type = object({
    eu = string
    us = string
    ap = string
  })
  default = {
    eu = "eu-central-1"
    us = "us-east-1"
    ap = "ap-southeast-1"
  }
}

variable "edgemesh_version" {
  description = "The edgemesh release the nodes install from PyPI."
  type        = string
  default     = "0.1.0"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)*((a|b|rc)[0-9]+)?(\\.post[0-9]+)?(\\.dev[0-9]+)?$", var.edgemesh_version))
    error_message = "The edgemesh_version must be an exact release such as 0.1.0."
  }
}

variable "secrets" {
  description = "NATS passwords and API keys (the secrets JSON of mesh/secrets.py). Keep it in a git-ignored secrets.auto.tfvars.json; see docs/terraform.md for how to generate it."
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
}

variable "nats_servers_per_region" {
  description = "NATS servers in each region's cluster (3 gives JetStream replicas = 3)."
  type        = number
  default     = 3

  validation {
    condition     = var.nats_servers_per_region >= 1 && var.nats_servers_per_region <= 5 && floor(var.nats_servers_per_region) == var.nats_servers_per_region
    error_message = "The nats_servers_per_region must be a whole number from 1 to 5."
  }
}

variable "operator_cidrs" {
  description = "CIDRs allowed to the control-plane API and NATS monitoring."
  type        = list(string)
  default     = []
}

variable "certificate_arns" {
  description = "ACM certificate ARN per region (eu, us, ap) for edge.REGION.DOMAIN; a region with one serves wss:// on 443, one without ws:// on 80."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.certificate_arns) : contains(["eu", "us", "ap"], k)])
    error_message = "The certificate_arns keys must be among eu, us, ap."
  }
}

variable "availability_zones" {
  description = "Availability zones per region (eu, us, ap), two or more each. Default: the first two available in each."
  type        = map(list(string))
  default     = {}
}

variable "ami_ids" {
  description = "AMI per region (eu, us, ap). Default: the latest Amazon Linux 2023 in each."
  type        = map(string)
  default     = {}
}

variable "geoip_db_s3_uri" {
  description = "S3 URI (s3://BUCKET/KEY.mmdb) of a MaxMind City database you uploaded (GeoLite2-City or GeoIP2-City; MaxMind requires a licence, so none ships with edgemesh). Each control plane fetches it before it starts and locates clients with it. Null: every client gets the topology's default region, whatever its location."
  type        = string
  default     = null
}
