package apierr

import "google.golang.org/protobuf/protoadapt"

type protoadaptDetail = protoadapt.MessageV1
