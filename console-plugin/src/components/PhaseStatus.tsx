import * as React from 'react';
import { Icon } from '@patternfly/react-core';
import {
  CheckCircleIcon,
  ExclamationCircleIcon,
  ExclamationTriangleIcon,
  HourglassHalfIcon,
  InProgressIcon,
  UnknownIcon,
} from '@patternfly/react-icons';
import { phaseLook } from '../format';

const ICONS = {
  success: <CheckCircleIcon />,
  danger: <ExclamationCircleIcon />,
  warning: <ExclamationTriangleIcon />,
  progress: <InProgressIcon />,
  pending: <HourglassHalfIcon />,
  unknown: <UnknownIcon />,
};

const STATUS = {
  success: 'success',
  danger: 'danger',
  warning: 'warning',
  progress: 'info',
  pending: 'custom',
  unknown: 'custom',
} as const;

/** An entry's phase with the icon the console uses for such a state. */
export const PhaseStatus: React.FC<{ phase?: string }> = ({ phase }) => {
  const look = phaseLook(phase);
  return (
    <span data-test="phase" data-phase={phase ?? ''}>
      <Icon status={STATUS[look]} isInline>
        {ICONS[look]}
      </Icon>{' '}
      {phase ?? '-'}
    </span>
  );
};
